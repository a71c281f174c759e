/*
 * The console's monitoring charts, drawn with the vendored Chart.js 4 (static/vendor/chartjs/).
 * Served by the app itself; no inline script is needed, so a strict CSP can forbid them.
 *
 * CONTRACT (any page may reuse it):
 *
 *   <script src="{% static 'vendor/chartjs/4.5.1/chart.umd.min.js' %}" defer></script>
 *   <script src="{% static 'console/charts.js' %}" defer></script>
 *   <div data-series-url="/console/models/NAME/series.json?from=2026-11-01T00:00:00Z&to=..."
 *        data-mark-at="2026-11-20T10:00:00Z" data-mark-label="incident #3 opened">  (mark: optional)
 *     <canvas data-chart="psi"></canvas>            one canvas per chart id wanted, in a box
 *     <canvas data-chart="performance"></canvas>    with a height (the charts fill their parent)
 *   </div>
 *   <span data-series-status role="status"></span>  optional, inside the container or anywhere
 *
 * On DOMContentLoaded every [data-series-url] container fetches its URL once and draws each
 * canvas[data-chart] inside it; a drawn canvas gets data-drawn="yes" and Chart.getChart(canvas)
 * returns its chart (dataset 0 is the chart's first series). ConsoleCharts.render(container)
 * draws a container added later.
 *
 * JSON (GET .../series.json?from=&to= | ?days=N; dates or ISO datetimes, UTC):
 *   { model, from, to (ISO), from_ms, to_ms (epoch ms: the x axis),
 *     annotations: [{t, at, when, kind: promotion|rollback|halt|halt_released, version, label}],
 *     charts: [{ id: psi|ks|performance|fairness_gap|fairness_ratio|fairness_groups|ece|labels|
 *                    feedback_loop,
 *                title, check, y: {label, type: linear|logarithmic, min}, y2: null | {label, type},
 *                thresholds: [{value, axis: y|y2, label, kind: max|min}],
 *                series: [{label, role: value|baseline|limit, axis, dash?,
 *                          points: [{t, y (null = no value), version, n?, drop?, lo?, hi?}]}],
 *                alerts: [{id, t, y (null: drawn at the top), axis, severity, status, version,
 *                          label}],
 *                band?: {relative, metric, higher_is_better}, min_group_size?,
 *                confidence_level? }] }
 * Annotations are drawn on every chart as vertical lines labelled with their version; alerts
 * as triangles (the last dataset, "alerts"); thresholds as dashed horizontal lines with a label.
 * A value series whose points carry lo/hi (the interval at the chart's confidence_level) gets a
 * shaded band in its colour: two datasets after all the series (flagged band: true, left out
 * of the legend and the tooltip; the tooltip of the line gives the interval).
 */
(function () {
  "use strict";

  var PALETTE = ["#0b5cad", "#c75000", "#2e7d32", "#6a1b9a", "#00838f", "#8d6e00", "#ad1457",
    "#37474f", "#5d4037", "#1565c0", "#558b2f", "#4527a0"];
  var POINT_STYLES = ["circle", "rect", "rectRot", "crossRot", "star", "rectRounded", "cross"];
  var DASHES = [[], [6, 3], [2, 2], [8, 3, 2, 3]];
  var SEVERITY_COLOURS = { watch: "#7fa7d9", medium: "#f2b600", high: "#e65100",
    critical: "#8e0000" };
  var EVENT_STYLES = {
    promotion: { colour: "#1b5e20", dash: [] },
    rollback: { colour: "#6a1b9a", dash: [7, 4] },
    halt: { colour: "#a4161a", dash: [2, 3] },
    halt_released: { colour: "#555555", dash: [2, 3] },
    mark: { colour: "#000000", dash: [10, 3, 2, 3] }
  };
  var LOG_FLOOR = 1e-12; // a p-value of 0 cannot sit on a log axis; the tooltip shows the truth

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  function formatTime(ms, withTime) {
    var d = new Date(ms);
    var day = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
    return withTime ? day + " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) : day;
  }

  function formatNumber(v) {
    if (v === null || v === undefined) return "no value";
    if (Math.abs(v) >= 1000 || Number.isInteger(v)) return String(Math.round(v));
    return Number(v.toPrecision(3)).toString();
  }

  // Our own small plugin: thresholds (horizontal) and lifecycle events (vertical, labelled).
  var guides = {
    id: "consoleGuides",
    afterDatasetsDraw: function (chart, args, opts) {
      var area = chart.chartArea;
      var ctx = chart.ctx;
      ctx.save();
      ctx.font = "11px system-ui, sans-serif";
      (opts.thresholds || []).forEach(function (t) {
        var scale = chart.scales[t.axis || "y"];
        if (!scale) return;
        var y = scale.getPixelForValue(t.value);
        if (!(y >= area.top && y <= area.bottom)) return;
        ctx.strokeStyle = "#222";
        ctx.lineWidth = 1.5;
        ctx.setLineDash([5, 4]);
        ctx.beginPath();
        ctx.moveTo(area.left, y);
        ctx.lineTo(area.right, y);
        ctx.stroke();
        ctx.setLineDash([]);
        var width = ctx.measureText(t.label).width + 6;
        ctx.fillStyle = "rgba(255,255,255,0.85)";
        ctx.fillRect(area.right - 4 - width, y - 15, width, 13);
        ctx.fillStyle = "#222";
        ctx.textAlign = "right";
        ctx.textBaseline = "bottom";
        ctx.fillText(t.label, area.right - 7, y - 2);
      });
      var x = chart.scales.x;
      var rows = [];
      (opts.events || []).forEach(function (e) {
        var px = x.getPixelForValue(e.t);
        if (!(px >= area.left && px <= area.right)) return;
        var style = EVENT_STYLES[e.kind] || EVENT_STYLES.mark;
        ctx.strokeStyle = style.colour;
        ctx.lineWidth = 1.5;
        ctx.setLineDash(style.dash);
        ctx.beginPath();
        ctx.moveTo(px, area.top);
        ctx.lineTo(px, area.bottom);
        ctx.stroke();
        ctx.setLineDash([]);
        var width = ctx.measureText(e.label).width + 6;
        var left = Math.min(Math.max(px - width / 2, area.left), area.right - width);
        // the first label row whose last label ends before this one starts
        var row = 0;
        while (rows[row] !== undefined && rows[row] > left) row += 1;
        rows[row] = left + width + 4;
        var top = area.top - 14 - (row % 3) * 13;
        ctx.fillStyle = "rgba(255,255,255,0.9)";
        ctx.fillRect(left, top - 1, width, 13);
        ctx.fillStyle = style.colour;
        ctx.textAlign = "left";
        ctx.textBaseline = "top";
        ctx.fillText(e.label, left + 3, top);
      });
      ctx.restore();
    }
  };

  function axisMax(spec, axis) {
    var max = null;
    spec.series.forEach(function (s) {
      if ((s.axis || "y") !== axis) return;
      s.points.forEach(function (p) { if (p.y !== null && (max === null || p.y > max)) max = p.y; });
    });
    spec.thresholds.forEach(function (t) {
      if ((t.axis || "y") === axis && (max === null || t.value > max)) max = t.value;
    });
    return max === null ? 1 : max;
  }

  function hasBand(s) {
    return s.points.some(function (p) {
      return p.lo !== undefined && p.lo !== null && p.hi !== undefined && p.hi !== null;
    });
  }

  // The interval as a shaded band: its upper edge, then its lower edge filled up to it.
  function bandDatasets(s, colour, index) {
    var edge = { borderWidth: 0, pointRadius: 0, pointHoverRadius: 0, tension: 0, band: true,
      yAxisID: s.axis || "y", spanGaps: false };
    var upper = s.points.map(function (p) { return { x: p.t, y: p.hi === undefined ? null : p.hi }; });
    var lower = s.points.map(function (p) { return { x: p.t, y: p.lo === undefined ? null : p.lo }; });
    return [
      Object.assign({ label: s.label + " (interval, upper)", data: upper, fill: false,
        borderColor: colour, backgroundColor: colour }, edge),
      Object.assign({ label: s.label + " (interval)", data: lower, fill: { target: index },
        borderColor: colour, backgroundColor: colour + "2e" }, edge)
    ];
  }

  function datasets(spec) {
    var out = [];
    var bands = [];
    var baselineIndex = -1;
    var valueCount = 0;
    spec.series.forEach(function (s) {
      var log = (s.axis === "y2" ? (spec.y2 || {}).type : spec.y.type) === "logarithmic";
      var data = s.points.map(function (p) {
        var y = p.y;
        if (log && y !== null) y = Math.max(y, LOG_FLOOR);
        return { x: p.t, y: y, raw: p.y, version: p.version, n: p.n, drop: p.drop,
          lo: p.lo, hi: p.hi };
      });
      var ds = { label: s.label, data: data, yAxisID: s.axis || "y", parsing: true, spanGaps: false,
        borderWidth: 2, pointRadius: data.length > 90 ? 1.5 : 3, pointHoverRadius: 5, tension: 0 };
      if (s.role === "baseline") {
        baselineIndex = out.length;
        Object.assign(ds, { borderColor: "#37474f", backgroundColor: "#37474f", borderDash: [6, 4],
          pointRadius: 0, stepped: "before", pointStyle: "line" });
      } else if (s.role === "limit") {
        Object.assign(ds, { borderColor: "#90a4ae", backgroundColor: "rgba(144,164,174,0.25)",
          borderDash: [2, 2], pointRadius: 0, stepped: "before", pointStyle: "line",
          fill: baselineIndex >= 0 ? { target: baselineIndex } : false });
      } else {
        var colour = PALETTE[valueCount % PALETTE.length];
        var dash = s.dash ? [6, 3] : DASHES[Math.floor(valueCount / PALETTE.length) % DASHES.length];
        Object.assign(ds, { borderColor: colour, backgroundColor: colour, borderDash: dash,
          pointStyle: POINT_STYLES[valueCount % POINT_STYLES.length] });
        valueCount += 1;
        if (hasBand(s)) bands.push({ series: s, colour: colour });
      }
      out.push(ds);
    });
    bands.forEach(function (b) {
      out.push.apply(out, bandDatasets(b.series, b.colour, out.length));
    });
    if (spec.alerts.length) {
      var tops = { y: axisMax(spec, "y"), y2: axisMax(spec, "y2") };
      spec.alerts.forEach(function (a) {
        out.push({ type: "scatter", label: "alert (" + a.severity + ")", yAxisID: a.axis || "y",
          data: [{ x: a.t, y: a.y === null ? tops[a.axis || "y"] : a.y, alert: a }],
          pointStyle: "triangle", pointRadius: 8, pointHoverRadius: 10, borderWidth: 1.5,
          borderColor: "#000", backgroundColor: SEVERITY_COLOURS[a.severity] || "#8e0000",
          showLine: false });
      });
    }
    return out;
  }

  var HOUR = 36e5;
  var DAY = 864e5;
  var STEPS = [HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY,
    28 * DAY, 56 * DAY, 91 * DAY];

  // Ticks on whole UTC hours or days (a linear axis alone would put them at odd instants).
  function timeTicks(min, max) {
    var step = STEPS.find(function (s) { return (max - min) / s <= 8; }) || 182 * DAY;
    var ticks = [];
    for (var t = Math.ceil(min / step) * step; t <= max; t += step) ticks.push({ value: t });
    return ticks;
  }

  function scales(spec, payload) {
    var span = payload.to_ms - payload.from_ms;
    var result = {
      x: { type: "linear", min: payload.from_ms, max: payload.to_ms,
        afterBuildTicks: function (axis) { axis.ticks = timeTicks(axis.min, axis.max); },
        ticks: { autoSkip: false, maxRotation: 0,
          callback: function (v) { return formatTime(v, span < 3 * DAY); } },
        title: { display: false } },
      y: { type: spec.y.type, position: "left", title: { display: true, text: spec.y.label },
        ticks: { callback: function (v) { return formatNumber(v); } } }
    };
    if (spec.y.min !== null && spec.y.min !== undefined && spec.y.type !== "logarithmic") {
      result.y.min = spec.y.min;
    }
    var top = axisMax(spec, "y");
    result.y.suggestedMax = top * 1.15;
    if (spec.y2) {
      result.y2 = { type: spec.y2.type, position: "right", grid: { drawOnChartArea: false },
        title: { display: true, text: spec.y2.label },
        ticks: { callback: function (v) { return formatNumber(v); } } };
      if (spec.y2.type === "logarithmic") result.y2.max = 1;
    }
    return result;
  }

  function tooltip(ctx) {
    var raw = ctx.raw || {};
    if (raw.alert) return raw.alert.label;
    var parts = [ctx.dataset.label + ": " + formatNumber(raw.raw === undefined ? raw.y : raw.raw)];
    if (raw.version) parts.push("version " + raw.version);
    if (raw.n !== undefined && raw.n !== null) parts.push("group size " + raw.n);
    if (raw.drop !== undefined && raw.drop !== null) parts.push("drop " + formatNumber(raw.drop * 100) + " %");
    if (raw.lo !== undefined && raw.lo !== null && raw.hi !== undefined && raw.hi !== null) {
      var level = ctx.chart.options.plugins.consoleGuides.level;
      parts.push((level ? formatNumber(level * 100) + " % " : "") + "interval " +
        formatNumber(raw.lo) + " to " + formatNumber(raw.hi));
    }
    return parts.join(", ");
  }

  function draw(canvas, spec, payload, mark) {
    var existing = window.Chart.getChart(canvas);
    if (existing) existing.destroy();
    var events = payload.annotations.slice();
    if (mark) events.push(mark);
    var chart = new window.Chart(canvas, {
      type: "line",
      data: { datasets: datasets(spec) },
      plugins: [guides],
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: { xAxisKey: "x", yAxisKey: "y" },
        layout: { padding: { top: 42, right: 8 } },
        interaction: { mode: "nearest", intersect: false },
        scales: scales(spec, payload),
        plugins: {
          legend: { position: "bottom", labels: { usePointStyle: true, boxHeight: 8,
            filter: function (item, data) {
              // one legend entry for all alert markers; none for the interval bands
              var ds = data.datasets[item.datasetIndex];
              if (ds.band) return false;
              if (ds.type !== "scatter") return true;
              return data.datasets.findIndex(function (d) { return d.type === "scatter"; }) === item.datasetIndex;
            },
            generateLabels: function (chart) {
              var items = window.Chart.defaults.plugins.legend.labels.generateLabels(chart);
              items.forEach(function (item) {
                if (chart.data.datasets[item.datasetIndex].type === "scatter") item.text = "alerts";
              });
              return items;
            } } },
          tooltip: { filter: function (item) { return !item.dataset.band; }, callbacks: {
            title: function (items) { return items.length ? formatTime(items[0].parsed.x, true) + " UTC" : ""; },
            label: tooltip } },
          consoleGuides: { thresholds: spec.thresholds, events: events,
            level: spec.confidence_level }
        }
      }
    });
    canvas.setAttribute("data-drawn", "yes");
    return chart;
  }

  function status(container, text) {
    var el = container.querySelector("[data-series-status]") || document.querySelector("[data-series-status]");
    if (el) el.textContent = text;
  }

  function render(container) {
    var url = container.getAttribute("data-series-url");
    var markAt = container.getAttribute("data-mark-at");
    var mark = markAt ? { t: Date.parse(markAt), kind: "mark",
      label: container.getAttribute("data-mark-label") || "" } : null;
    status(container, "Loading the charts…");
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (payload) {
        var byId = {};
        payload.charts.forEach(function (c) { byId[c.id] = c; });
        container.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
          var spec = byId[canvas.getAttribute("data-chart")];
          if (spec) draw(canvas, spec, payload, mark);
        });
        status(container, "");
        container.setAttribute("data-series-loaded", "yes");
      })
      .catch(function (error) {
        status(container, "The charts could not be loaded (" + error.message + "); the tables below still hold the latest values.");
      });
  }

  window.ConsoleCharts = { render: render, draw: draw };
  document.addEventListener("DOMContentLoaded", function () {
    if (!window.Chart) return;
    document.querySelectorAll("[data-series-url]").forEach(render);
  });
})();
