// The training job page: live curves and status, polled while the job is active.
(function () {
  const root = document.getElementById("job");
  if (!root) return;
  const font = { family: "Inter, system-ui, sans-serif", size: 12 };
  // The legend sits above the plot, right-aligned (as in frontend/charts.py): below it, it
  // covered the x-axis title.
  const legend = { orientation: "h", yanchor: "bottom", y: 1.02, xanchor: "right", x: 1 };
  const layout = (yTitle, extra) => Object.assign({
    height: 300, margin: { l: 60, r: 65, t: 30, b: 45 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    xaxis: { title: { text: "step" }, gridcolor: "#eef0f4", automargin: true },
    yaxis: { title: { text: yTitle }, gridcolor: "#eef0f4", automargin: true },
    legend: legend, font: font, showlegend: true,
  }, extra || {});
  const config = { responsive: true, displaylogo: false };
  const colors = {
    loss: "#4f46e5", eval_loss: "#f59e0b", learning_rate: "#10b981", tokens_per_second: "#0ea5e9",
    "system/cpu_percent": "#4f46e5", "system/memory_mb": "#10b981", "system/gpu_memory_mb": "#ef4444",
  };
  const palette = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#14b8a6", "#64748b"];
  const colorOf = (name, index) => colors[name] || palette[index % palette.length];
  const SYSTEM = { "system/cpu_percent": "CPU %", "system/memory_mb": "memory (MB)", "system/gpu_memory_mb": "GPU memory (MB)" };
  const hasPoints = (curve) => curve && curve.steps && curve.steps.length > 0;

  // Exponential moving average with TensorBoard's debiasing; frontend/charts.py's ema() is the
  // same function (the tests compare them). Missing values stay missing and do not count.
  function ema(values, weight) {
    let accumulated = 0, count = 0;
    return values.map((v) => {
      if (v === null || v === undefined) return null;
      accumulated = accumulated * weight + (1 - weight) * v;
      count += 1;
      return accumulated / (1 - Math.pow(weight, count));
    });
  }
  LLMHub.ema = ema;

  // With nothing to plot, say so instead of drawing empty axes from -1 to 6.
  function plot(id, traces, plotLayout) {
    const el = document.getElementById(id);
    if (!el) return;
    if (!traces.length) {
      const active = root.dataset.status === "queued" || root.dataset.status === "running";
      el.dataset.empty = "true";
      Plotly.react(el, [], {
        height: plotLayout.height, paper_bgcolor: "#fff", plot_bgcolor: "#fff", font: font,
        margin: { l: 10, r: 10, t: 10, b: 10 },
        xaxis: { visible: false }, yaxis: { visible: false },
        annotations: [{ text: active ? "Waiting for data" : "No data recorded", xref: "paper", yref: "paper",
          x: 0.5, y: 0.5, showarrow: false, font: { size: 14, color: "#667085" } }],
      }, config);
      return;
    }
    el.dataset.empty = "false";
    Plotly.react(el, traces, plotLayout, config);
  }

  function trace(name, curve, index, extra) {
    return Object.assign({ x: curve.steps, y: curve.values, name: name, type: "scatter",
      mode: curve.steps.length < 30 ? "lines+markers" : "lines",
      line: { color: colorOf(name, index), width: 2 } }, extra || {});
  }

  const slider = document.getElementById("loss-smoothing");
  const sliderValue = document.querySelector("[data-field=smoothing]");
  const STORAGE_KEY = "llmhub.lossSmoothing";
  if (slider) {
    const saved = parseFloat(localStorage.getItem(STORAGE_KEY));
    if (!isNaN(saved) && saved >= 0 && saved <= 0.99) slider.value = saved;
    if (sliderValue) sliderValue.textContent = Number(slider.value).toFixed(2);
  }
  const smoothing = () => (slider ? Math.min(Math.max(parseFloat(slider.value) || 0, 0), 0.99) : 0);

  // Loss curves: training losses smoothed, the raw curve faint behind; evaluation losses (a few
  // points, one per evaluation) as lines with markers, never smoothed.
  function lossTraces(curves) {
    const weight = smoothing();
    const traces = [];
    Object.keys(curves).filter((n) => n.endsWith("loss") && !n.startsWith("system/") && hasPoints(curves[n]))
      .forEach((name, index) => {
        const curve = curves[name];
        const color = colorOf(name, index);
        if (name.startsWith("eval")) {
          traces.push(trace(name, curve, index, { mode: "lines+markers", marker: { size: 7, color: color }, meta: "eval" }));
        } else if (weight > 0 && curve.steps.length > 1) {
          traces.push(trace(name, curve, index, { name: name + " (raw)", mode: "lines", opacity: 0.25,
            line: { color: color, width: 1 }, showlegend: false, hoverinfo: "skip", meta: "raw" }));
          traces.push(trace(name, { steps: curve.steps, values: ema(curve.values, weight) }, index,
            { mode: "lines", meta: "smoothed", hovertemplate: "%{y:.4g}<extra>" + name + " (smoothed)</extra>" }));
        } else {
          traces.push(trace(name, curve, index, { meta: "raw" }));
        }
      });
    return traces;
  }

  let lastCurves = {};
  function draw(data) {
    const curves = data.curves || {};
    lastCurves = curves;
    drawLoss();
    const other = [];
    if (hasPoints(curves.learning_rate)) other.push(trace("learning_rate", curves.learning_rate, 0));
    if (hasPoints(curves.tokens_per_second)) other.push(trace("tokens_per_second", curves.tokens_per_second, 1, { yaxis: "y2" }));
    plot("chart-lr", other, layout("learning rate", {
      yaxis2: { title: { text: "tokens/s" }, overlaying: "y", side: "right", showgrid: false, automargin: true } }));
    // System metrics (reported by the runtime as system/...): their own small chart, CPU on
    // the left axis, memory on the right; the card shows only once the job reports any.
    const system = Object.keys(SYSTEM).filter((n) => hasPoints(curves[n]));
    const card = document.getElementById("system-card");
    if (card && system.length) {
      card.hidden = false;
      plot("chart-system", system.map((n, i) => trace(SYSTEM[n], curves[n], i, {
        line: { color: colors[n], width: 2 }, yaxis: n === "system/cpu_percent" ? "y" : "y2" })),
      layout("CPU %", { height: 220, yaxis: { title: { text: "CPU %" }, gridcolor: "#eef0f4", rangemode: "tozero", automargin: true },
        yaxis2: { title: { text: "MB" }, overlaying: "y", side: "right", showgrid: false, rangemode: "tozero", automargin: true } }));
    }
    const tps = curves.tokens_per_second;
    if (hasPoints(tps)) {
      root.querySelector("[data-field=tokens_per_second]").textContent = Math.round(tps.values[tps.values.length - 1]).toLocaleString();
    }
  }
  function drawLoss() { plot("chart-loss", lossTraces(lastCurves), layout("loss")); }
  if (slider) {
    slider.addEventListener("input", () => {
      if (sliderValue) sliderValue.textContent = Number(slider.value).toFixed(2);
      localStorage.setItem(STORAGE_KEY, slider.value);
      drawLoss();
    });
  }

  function status(job) {
    root.dataset.status = job.status;
    root.querySelector("[data-field=progress]").textContent = Math.round(job.progress * 100) + "%";
    root.querySelector("[data-field=progress-bar]").style.width = Math.round(job.progress * 100) + "%";
    root.querySelector("[data-field=global_step]").textContent = job.global_step.toLocaleString();
    root.querySelector("[data-field=eta]").textContent = job.eta_seconds ? "ETA " + Math.round(job.eta_seconds) + "s" : "—";
    root.querySelector("[data-field=device]").textContent = job.device || "—";
    root.querySelector("[data-field=worker_host]").textContent = job.worker_host || "—";
    const started = root.querySelector("[data-field=started_at]");
    if (started && job.started_at) started.textContent = new Date(job.started_at).toLocaleString();
    const attempts = root.querySelector("[data-field=attempts]");
    if (attempts) attempts.textContent = job.attempts;
    const badge = root.querySelector("[data-field=status]");
    if (badge) showJobStatus(badge, job);  // llmhub.js: the badge's text and colour
    const log = document.getElementById("job-log");
    if (job.log && log.textContent !== job.log) { log.textContent = job.log; log.scrollTop = log.scrollHeight; }
  }
  let wasActive = root.dataset.status === "queued" || root.dataset.status === "running";
  LLMHub.poll(async () => {
    const [curves, job] = await Promise.all([LLMHub.api(root.dataset.curvesUrl), LLMHub.api(root.dataset.jobUrl)]);
    status(job);
    draw(curves);
    const active = job.status === "queued" || job.status === "running";
    if (wasActive && !active) { setTimeout(() => LLMHub.refresh("The job has finished."), 500); return false; }
    wasActive = active;
    return active;
  }, 2000);
})();
