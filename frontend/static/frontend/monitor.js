// An endpoint's monitor page: a click on a traffic chart's point opens the request log of that
// bucket (its version, time and status), and while the range ends now the charts and totals are
// redrawn from the page's data URL (the same figures frontend/charts.py builds for the page).
(function () {
  const root = document.getElementById("traffic");
  if (!root) return;
  const config = { responsive: true, displaylogo: false };

  // A trace's meta (frontend.charts._time_trace): the version and whether the series is the
  // canary's, the first bucket's start, the bucket's seconds and the log filter a click adds;
  // the n-th point's bucket starts n buckets after the first.
  function logUrl(point) {
    const meta = point && point.data && point.data.meta;
    if (!meta || !meta.start) return null;
    const since = new Date(Date.parse(meta.start) + point.pointIndex * meta.bucket * 1000);
    const until = new Date(since.getTime() + meta.bucket * 1000);
    const params = new URLSearchParams();
    if (meta.version !== "" && meta.version !== null && meta.version !== undefined) params.set("version", meta.version);
    if (meta.canary !== undefined) params.set("canary", meta.canary ? "true" : "false");
    params.set("since", since.toISOString());
    params.set("until", until.toISOString());
    if (meta.filter && meta.value !== "" && meta.value !== null && meta.value !== undefined) params.set(meta.filter, meta.value);
    return root.dataset.logUrl + "?" + params.toString();
  }
  LLMHub.monitorLogUrl = logUrl;

  function bindClicks(el) {
    if (el.dataset.clickBound === "true" || typeof el.on !== "function") return;
    el.dataset.clickBound = "true";
    el.on("plotly_click", (event) => {
      const url = event && event.points && event.points.length ? logUrl(event.points[0]) : null;
      if (url) window.location = url;
    });
  }
  const charts = () => Array.from(root.querySelectorAll("[data-monitor-chart]"));

  const formats = {
    latency_p95: (v) => v.toFixed(1) + " ms",
    cache_hit_rate: (v) => Math.round(v * 100) + "%",
    feedback_score: (v) => Math.round(v * 100) + "%",
  };
  function showTotals(totals) {
    root.querySelectorAll("[data-total]").forEach((el) => {
      const value = totals ? totals[el.dataset.total] : null;
      if (value === null || value === undefined) {
        el.textContent = ["requests", "errors", "rate_limited", "rejected"].includes(el.dataset.total) ? "0" : "—";
        return;
      }
      const format = formats[el.dataset.total];
      el.textContent = format ? format(value) : Number(value).toLocaleString("en-US");
    });
  }

  function draw(figures) {
    charts().forEach((el) => {
      const figure = figures[el.dataset.monitorChart];
      if (!figure) return;
      el.dataset.empty = figure.layout && figure.layout.meta && figure.layout.meta.empty ? "true" : "false";
      Plotly.react(el, figure.data, figure.layout, config).then(() => bindClicks(el));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    // llmhub.js drew the figures first (its listener was added before this one).
    charts().forEach(bindClicks);
    if (root.dataset.live !== "true") return;
    const url = root.dataset.dataUrl + window.location.search;
    let updates = 0;
    LLMHub.poll(async () => {
      if (updates++ === 0) return true;  // the page itself is the first state
      const data = await LLMHub.api(url);
      draw(data.figures || {});
      showTotals(data.totals);
      const message = document.getElementById("traffic-message");
      if (message) { message.hidden = !data.empty; if (data.message) message.textContent = data.message; }
      root.dataset.updated = String(updates);
      return true;
    }, parseInt(root.dataset.interval, 10) || 5000);
  });
})();
