"""A synthetic organisation the size of a real township, for the demo, training and benchmarks.

The data is generated, never real: names are drawn from common surnames and given names with a
fixed seed, so every run (and every machine) produces the same file and the demo's login table can
list fixed usernames. The shape is that of DESIGN §9, so it goes through the same `import_org` as a
township's own file.
"""

from __future__ import annotations

import io
import random
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

DEMO_PASSWORD = "gridloop-demo"
TOTAL_GRIDS = 320
DISTRICTS_PER_VILLAGE = 3
GRIDS_PER_DISTRICT = (7, 11)  # the range each district's grid count is drawn from
HOUSEHOLDS_PER_GRID = (45, 55)

TOWN = {"code": "XDK", "name": "小渡口镇"}
VILLAGES = (
    "桥头村",
    "渡口社区",
    "河西村",
    "柳湾村",
    "石板村",
    "新华村",
    "东岳村",
    "杨家湾村",
    "长岭村",
    "荷塘社区",
    "枫林村",
    "龙泉村",
)
DEPARTMENTS = (("PS", "派出所"), ("ZR", "自然资源所"), ("NJ", "农经站"), ("AJ", "安监站"))
OFFICERS_PER_DEPARTMENT = 2
TOWN_LEADERS = 6  # each liaises with two villages
AUDITORS = 2

# One of each tier, for the demo's login table: (tier, username).
DEMO_LOGINS: list[tuple[str, str]] = [
    ("info_officer", "v01.d1.g01.officer"),
    ("grid_leader", "v01.d1.g01.leader"),
    ("district_leader", "v01.d1.leader"),
    ("village_secretary", "v01.secretary"),
    ("town_leadership", "town.leader1"),
    ("department_officer", "dept.ps.1"),
    ("auditor", "auditor1"),
    ("admin", "admin"),
]

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚"
    "邵万钱严覃武戴莫孔向汤"
)
GIVEN_NAMES = (
    "伟 芳 娜 秀英 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀兰 霞 平 刚 桂英 建华 建国 国强 "
    "志强 春梅 玉兰 海燕 德明 文 华 红 梅 兰 英 林 峰 斌 鹏 辉 波 宁 玲 燕 丹 慧 琴 云 飞 亮 成 "
    "鑫 浩 宇 俊 晨 欣 怡 佳 雪 婷 倩 凤英 金凤 桂兰 桂芳 春花 秋菊 冬梅 志明 志刚 国华 国庆 建军 "
    "卫东 红军 永红 爱国 爱华 德华 德胜 福生 长青 水生 根生 富贵 来福 双喜 小红 小军 海波 晓东"
).split()
NUMERALS = "一二三四五六七八九十"


def chinese_number(n: int) -> str:
    """1..99 in Chinese numerals (十一, 二十三), for unit names such as 三片 and 十一组."""
    if not 1 <= n <= 99:
        raise ValueError(n)
    tens, ones = divmod(n, 10)
    head = "" if tens == 0 else ("十" if tens == 1 else NUMERALS[tens - 1] + "十")
    return head + (NUMERALS[ones - 1] if ones else "")


class _Names:
    """Draws synthetic names; staff names are kept distinct so the demo's people are tell-apart."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def any(self) -> str:
        return self.rng.choice(SURNAMES) + self.rng.choice(GIVEN_NAMES)

    def distinct(self) -> str:
        while True:
            name = self.any()
            if name not in self.used:
                self.used.add(name)
                return name


def _grid_counts(rng: random.Random, districts: int) -> list[int]:
    """Spread exactly TOTAL_GRIDS over the districts, each within GRIDS_PER_DISTRICT."""
    low, high = GRIDS_PER_DISTRICT
    counts = [low] * districts
    for _ in range(TOTAL_GRIDS - low * districts):
        counts[rng.choice([i for i, c in enumerate(counts) if c < high])] += 1
    return counts


def demo_org(password: str = DEMO_PASSWORD) -> dict[str, Any]:
    """The demo organisation as plain dicts and lists in the §9 shape; the same on every call."""
    rng = random.Random(2024)
    names = _Names(rng)

    def person(username: str) -> dict[str, str]:
        return {"username": username, "name": names.distinct(), "password": password}

    counts = iter(_grid_counts(rng, len(VILLAGES) * DISTRICTS_PER_VILLAGE))
    villages = []
    for v, village_name in enumerate(VILLAGES, start=1):
        vcode = f"V{v:02d}"
        districts = []
        for d in range(1, DISTRICTS_PER_VILLAGE + 1):
            dcode = f"{vcode}-D{d}"
            grids = [_grid(rng, names, person, dcode, g) for g in range(1, next(counts) + 1)]
            districts.append(
                {
                    "code": dcode,
                    "name": f"{chinese_number(d)}片",
                    "leader": person(f"{dcode.lower().replace('-', '.')}.leader"),
                    "grids": grids,
                }
            )
        villages.append(
            {
                "code": vcode,
                "name": village_name,
                "secretary": person(f"{vcode.lower()}.secretary"),
                "districts": districts,
            }
        )
    per_leader = len(VILLAGES) // TOWN_LEADERS
    leaders = [
        {
            **person(f"town.leader{i}"),
            "liaises": [v["code"] for v in villages[(i - 1) * per_leader : i * per_leader]],
        }
        for i in range(1, TOWN_LEADERS + 1)
    ]
    departments = [
        {
            "code": code,
            "name": name,
            "officers": [
                person(f"dept.{code.lower()}.{k}") for k in range(1, OFFICERS_PER_DEPARTMENT + 1)
            ],
        }
        for code, name in DEPARTMENTS
    ]
    return {
        "town": dict(TOWN),
        "leaders": leaders,
        "departments": departments,
        "villages": villages,
        "auditors": [person(f"auditor{i}") for i in range(1, AUDITORS + 1)],
        "admins": [person("admin")],
    }


def _grid(rng: random.Random, names: _Names, person, dcode: str, g: int) -> dict[str, Any]:
    code = f"{dcode}-G{g:02d}"
    prefix = code.lower().replace("-", ".")
    size = rng.randint(*HOUSEHOLDS_PER_GRID)
    return {
        "code": code,
        "name": f"{chinese_number(g)}组",
        "households": [{"number": n, "head": names.any()} for n in range(1, size + 1)],
        "leader": person(f"{prefix}.leader"),
        "officers": [person(f"{prefix}.officer")],
    }


def demo_org_yaml(password: str = DEMO_PASSWORD) -> str:
    """The demo organisation as an organisation file (UTF-8 text, Chinese left readable).

    People, the town and each household are written in flow style (one line each): the file stays
    about 20,000 lines instead of 40,000 and reads like the example in DESIGN §9.
    """
    yaml = YAML()
    yaml.allow_unicode = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump(_styled(demo_org(password)), out)
    return out.getvalue()


def _styled(node: Any, key: str | None = None) -> Any:
    """Copy plain data into ruamel's commented types: maps of scalars (and a leader's liaison
    list) in flow style, everything larger in block style."""
    if isinstance(node, dict):
        styled = CommentedMap((k, _styled(v, k)) for k, v in node.items())
        if all(k == "liaises" or not isinstance(v, dict | list) for k, v in node.items()):
            styled.fa.set_flow_style()
        return styled
    if isinstance(node, list):
        items = CommentedSeq(_styled(v) for v in node)
        if key == "liaises":
            items.fa.set_flow_style()
        return items
    return node
