r"""Check a Gridloop case dossier offline:  python3 verify_dossier.py XDK-2026-000042.dossier.json

Needs Python 3.8+ and nothing else. A dossier is one case as JSON (Gridloop's DESIGN.md §6):
  {"format": "gridloop-dossier/1",
   "case":    {"number": "XDK-2026-000042", "title": ..., "diagram": <hash>, ...},
   "events":  [{"case", "seq", "at", "type", "actor", "task", "data", "diagram", "hash"}, ...],
   "head":    {"seq": <last seq>, "hash": <last event's hash>},
   "diagram": {"hash": <sha256>, "files": {path: content}},    the process version it is on
   "diagrams": [{"hash", "files"}, ...]}    only if it moved between versions: all of them
An event's hash chains it to the one before: sha256_hex(prev + "\n" + canonical) over UTF-8,
prev being the previous event's hash ("0" * 64 before seq 1) and canonical the event without
"hash": json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).
A bundle's hash is sha256 over its files sorted by path, each as path NUL content NUL.

This recomputes all of that and checks that seqs run 1..N, that each event is the dossier's
case's and names a diagram it carries, and that the head is the last event. It prints one line
per problem, naming the seq, then a summary. Exit status 0: everything matches; 1: something
does not; 2: the file cannot be read or is not a dossier. The events are the record: "case" is a
summary as of the export and is not sealed. It proves no event was changed after hashing unless
the whole chain was recomputed: to rule that out, compare the head (or an earlier hash) with
one kept elsewhere, such as a published daily digest or an old printout.
"""

import hashlib
import json
import sys

FORMAT = "gridloop-dossier/1"
GENESIS = "0" * 64


def short(value):
    return (value[:12] + "…") if isinstance(value, str) else repr(value)


def chain_hash(prev, event):
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + "\n" + canonical).encode("utf-8")).hexdigest()


def bundle_hash(files):
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode("utf-8") + b"\0" + files[path].encode("utf-8") + b"\0")
    return digest.hexdigest()


def bundles_of(dossier):  # (where in the file, bundle) of every diagram bundle carried
    extra = dossier.get("diagrams", [])
    return [("diagram", dossier["diagram"])] + [(f"diagrams[{i}]", x) for i, x in enumerate(extra)]


def load(path):
    """The dossier, or a reason why this is not one (exit 2)."""
    try:
        with open(path, encoding="utf-8") as handle:
            dossier = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"cannot read {path}: {exc}"
    if not isinstance(dossier, dict) or dossier.get("format") != FORMAT:
        return None, f"{path} is not a {FORMAT} file"
    shapes = {"case": dict, "events": list, "head": dict, "diagram": dict, "diagrams": list}
    for key, shape in shapes.items():
        if not isinstance(dossier.get(key, [] if key == "diagrams" else None), shape):
            return None, f"{path}: '{key}' is missing or not a JSON {shape.__name__}"
    if not all(isinstance(event, dict) for event in dossier["events"]):
        return None, f"{path}: an event is not a JSON object"
    for where, bundle in bundles_of(dossier):
        files = bundle.get("files") if isinstance(bundle, dict) else None
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            return None, f"{path}: '{where}' is not a bundle of text files"
    return dossier, None


def check_bundles(dossier, problems):
    """Recompute each carried bundle's hash; return the hashes the bundles are carried under."""
    for where, bundle in bundles_of(dossier):
        recomputed = bundle_hash(bundle["files"])
        if recomputed != bundle.get("hash"):
            problems.append(
                f"{where} {short(bundle.get('hash'))}: bundle hash does not match its files"
                f" (recomputed {short(recomputed)})"
            )
    return {bundle.get("hash") for _where, bundle in bundles_of(dossier)}


def check_events(dossier, bundles, problems):
    """Walk the chain; return the last event's (seq, hash), or (0, GENESIS) for none."""
    number = dossier["case"].get("number")
    prev, last, expected = GENESIS, (0, GENESIS), 1
    for event in dossier["events"]:
        seq = event.get("seq")
        if seq != expected:  # named once per gap: the seqs after it count on from this one
            problems.append(f"seq {seq}: expected seq {expected} (seqs run 1..N with no gap)")
        expected = (seq if isinstance(seq, int) else expected) + 1
        if event.get("case") != number:
            problems.append(f"seq {seq}: belongs to case {event.get('case')!r}, not {number!r}")
        if event.get("diagram") not in bundles:
            problems.append(f"seq {seq}: diagram {short(event.get('diagram'))} is not carried")
        stored = event.get("hash")
        recomputed = chain_hash(prev, {k: v for k, v in event.items() if k != "hash"})
        if recomputed != stored:
            problems.append(
                f"seq {seq}: hash does not match"
                f" (stored {short(stored)}, recomputed {short(recomputed)})"
            )
        # Chain on from the stored hash, so one edited event is named once, not with all after it.
        prev, last = (stored if isinstance(stored, str) else recomputed), (seq, stored)
    return last


def verify(dossier):
    problems = []
    bundles = check_bundles(dossier, problems)
    case_diagram = dossier["case"].get("diagram")
    if case_diagram != dossier["diagram"].get("hash"):
        problems.append(f"case: its diagram {short(case_diagram)} is not the dossier's diagram")
    seq, digest = check_events(dossier, bundles, problems)
    head = dossier["head"]
    if (head.get("seq"), head.get("hash")) != (seq, digest):
        problems.append(
            f"head: seq {head.get('seq')} {short(head.get('hash'))} is not the last event"
            f" (seq {seq} {short(digest)})"
        )
    return problems


def main(argv):
    if len(argv) != 2:
        print("usage: python3 verify_dossier.py FILE", file=sys.stderr)
        return 2
    dossier, reason = load(argv[1])
    if dossier is None:
        print(reason, file=sys.stderr)
        return 2
    problems = verify(dossier)
    for line in problems:
        print(line)
    number, head = dossier["case"].get("number"), dossier["head"]
    if problems:
        print(f"FAILED: case {number}: {len(problems)} problem(s)")
        return 1
    print(f"OK: case {number}, {len(dossier['events'])} events, head {head['seq']} {head['hash']}")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(errors="backslashreplace")  # a console that cannot show 中文
    sys.exit(main(sys.argv))
