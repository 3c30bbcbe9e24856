/* Draws the dashboards' charts (templates/dashboards/index.html) with ECharts, over the numbers
 * the page carries in <script type="application/json" id="figures-data"> (not executed, so the
 * Content-Security-Policy allows it).
 *
 * Markup: <div class="chart" data-chart="children|trend|categories|tiers">. Every number a chart
 * shows is also in a table on the page (the children's table, and a <details> under each other
 * chart), so without ECharts (not installed, blocked, an old browser) or when a chart fails, its
 * box is hidden and its table opened. Every word comes from the page's data, already translated:
 * this file holds none. Tooltips are drawn on the canvas (renderMode "richText"): ECharts' HTML
 * tooltips carry inline style attributes, which the policy refuses. */
(function () {
  "use strict";

  var BLUE = "#0b57d0";
  var GREEN = "#1e7b34";
  var RED = "#b3261e";
  var INK = "#1d2430";
  var MUTED = "#5c6675";
  var FONT = '"Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", system-ui, sans-serif';

  function read() {
    var source = document.getElementById("figures-data");
    if (!source) return null;
    try {
      return JSON.parse(source.textContent);
    } catch (e) {
      return null;
    }
  }

  // The table that holds the same numbers: the next <details> in the chart's section.
  function fallback(box) {
    box.hidden = true;
    box.setAttribute("data-state", "unavailable");
    var section = box.closest("section");
    var details = section && section.querySelector("details.figures-numbers");
    if (details) details.open = true;
  }

  function common(option) {
    option.animation = false;
    option.textStyle = { fontFamily: FONT, color: INK };
    option.tooltip = option.tooltip || {
      trigger: "axis",
      renderMode: "richText",
      confine: true
    };
    return option;
  }

  function legend(series) {
    return {
      top: 0,
      left: "center",
      itemWidth: 14,
      itemHeight: 10,
      textStyle: { fontSize: 12, color: MUTED },
      data: [series.received, series.resolved]
    };
  }

  function pair(series, numbers, type) {
    var shared = type === "line" ? { symbol: "circle", symbolSize: 5, smooth: false } : { barMaxWidth: 22 };
    return [
      Object.assign({ type: type, name: series.received, data: numbers.received, itemStyle: { color: BLUE }, lineStyle: { color: BLUE } }, shared),
      Object.assign({ type: type, name: series.resolved, data: numbers.resolved, itemStyle: { color: GREEN }, lineStyle: { color: GREEN } }, shared)
    ];
  }

  var COUNT_AXIS = { type: "value", minInterval: 1, axisLabel: { fontSize: 11, color: MUTED } };

  // Category axis labels on a phone: all of them, turned when there are more than fit flat.
  function labels(names, flat) {
    var many = names.length > flat;
    return { interval: 0, rotate: many ? 40 : 0, fontSize: 11, color: MUTED, hideOverlap: false };
  }

  var BUILD = {
    children: function (data) {
      var numbers = data.children;
      return common({
        legend: legend(data.series),
        grid: { left: 8, right: 8, top: 30, bottom: 4 },
        xAxis: { type: "category", data: numbers.names, axisLabel: labels(numbers.names, 4) },
        yAxis: COUNT_AXIS,
        series: pair(data.series, numbers, "bar")
      });
    },
    trend: function (data) {
      var numbers = data.trend;
      return common({
        legend: legend(data.series),
        grid: { left: 8, right: 12, top: 30, bottom: 4 },
        xAxis: {
          type: "category",
          data: numbers.starts,
          boundaryGap: false,
          axisLabel: { fontSize: 11, color: MUTED, hideOverlap: true }
        },
        yAxis: COUNT_AXIS,
        series: pair(data.series, numbers, "line")
      });
    },
    categories: function (data, box) {
      var numbers = data.categories;
      box.style.height = Math.max(180, 50 + numbers.names.length * 44) + "px";
      return common({
        legend: legend(data.series),
        grid: { left: 8, right: 12, top: 30, bottom: 4 },
        yAxis: {
          type: "category",
          inverse: true,
          data: numbers.names,
          axisLabel: { interval: 0, fontSize: 12, color: INK }
        },
        xAxis: COUNT_AXIS,
        series: pair(data.series, numbers, "bar")
      });
    },
    tiers: function (data, box) {
      var map = data.tiers;
      box.style.height = Math.max(200, 110 + map.units.length * 34) + "px";
      return common({
        tooltip: { trigger: "item", renderMode: "richText", confine: true },
        grid: { left: 8, right: 8, top: 8, bottom: 4 },
        xAxis: { type: "category", data: map.tiers, position: "bottom", axisLabel: labels(map.tiers, 3), splitArea: { show: true } },
        yAxis: { type: "category", data: map.units, inverse: true, axisLabel: { interval: 0, fontSize: 12, color: INK }, splitArea: { show: true } },
        visualMap: {
          show: false,
          min: 0,
          max: Math.max(1, map.max),
          inRange: { color: ["#ffffff", "#f4b8b3", RED] }
        },
        series: [
          {
            type: "heatmap",
            name: map.label,
            data: map.cells,
            label: { show: true, fontSize: 12 },
            itemStyle: { borderColor: "#ffffff", borderWidth: 2 }
          }
        ]
      });
    }
  };

  function draw() {
    var boxes = Array.prototype.slice.call(document.querySelectorAll("[data-chart]"));
    if (!boxes.length) return;
    var data = read();
    if (!data || !window.echarts || typeof window.echarts.init !== "function") {
      boxes.forEach(fallback);
      return;
    }
    var charts = [];
    boxes.forEach(function (box) {
      var build = BUILD[box.getAttribute("data-chart")];
      try {
        if (!build) throw new Error("no such chart");
        var option = build(data, box);
        var chart = window.echarts.init(box, null, { renderer: "canvas" });
        chart.setOption(option);
        charts.push(chart);
        box.setAttribute("data-state", "ready");
      } catch (e) {
        fallback(box);
      }
    });
    var pending = null;
    window.addEventListener("resize", function () {
      if (pending) window.clearTimeout(pending);
      pending = window.setTimeout(function () {
        charts.forEach(function (chart) {
          chart.resize();
        });
      }, 150);
    });
  }

  draw();
})();
