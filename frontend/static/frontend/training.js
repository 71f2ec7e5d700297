// The training job page: live curves and status, polled while the job is active.
(function () {
  const root = document.getElementById("job");
  if (!root) return;
  const layout = (title, yTitle, extra) => Object.assign({
    height: 300, margin: { l: 60, r: 65, t: 10, b: 40 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    xaxis: { title: { text: "step" }, gridcolor: "#eef0f4" },
    yaxis: { title: { text: yTitle }, gridcolor: "#eef0f4" },
    legend: { orientation: "h", y: -0.25 }, font: { family: "Inter, system-ui, sans-serif", size: 12 },
  }, extra || {});
  const config = { responsive: true, displaylogo: false };
  const colors = { loss: "#4f46e5", eval_loss: "#f59e0b", learning_rate: "#10b981", tokens_per_second: "#0ea5e9" };
  function trace(name, curve, extra) {
    return Object.assign({ x: curve.steps, y: curve.values, name: name, mode: curve.steps.length < 30 ? "lines+markers" : "lines",
      line: { color: colors[name] || undefined, width: 2 } }, extra || {});
  }
  function draw(data) {
    const curves = data.curves || {};
    const lossTraces = Object.keys(curves).filter((n) => n.endsWith("loss")).map((n) => trace(n, curves[n]));
    Plotly.react("chart-loss", lossTraces, layout("Loss", "loss"), config);
    const other = [];
    if (curves.learning_rate) other.push(trace("learning_rate", curves.learning_rate));
    if (curves.tokens_per_second) other.push(trace("tokens_per_second", curves.tokens_per_second, { yaxis: "y2" }));
    Plotly.react("chart-lr", other, layout("", "learning rate", {
      yaxis2: { title: { text: "tokens/s" }, overlaying: "y", side: "right", showgrid: false } }), config);
    const tps = curves.tokens_per_second;
    if (tps && tps.values.length) {
      root.querySelector("[data-field=tokens_per_second]").textContent = Math.round(tps.values[tps.values.length - 1]).toLocaleString();
    }
  }
  function status(job) {
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
    const badge = root.querySelector("[data-field=status] [data-status]");
    if (badge) badge.textContent = job.status.charAt(0).toUpperCase() + job.status.slice(1);
    const log = document.getElementById("job-log");
    if (job.log && log.textContent !== job.log) { log.textContent = job.log; log.scrollTop = log.scrollHeight; }
  }
  let wasActive = root.dataset.status === "queued" || root.dataset.status === "running";
  LLMHub.poll(async () => {
    const [curves, job] = await Promise.all([LLMHub.api(root.dataset.curvesUrl), LLMHub.api(root.dataset.jobUrl)]);
    draw(curves);
    status(job);
    const active = job.status === "queued" || job.status === "running";
    if (wasActive && !active) { setTimeout(() => LLMHub.refresh("The job has finished."), 500); return false; }
    wasActive = active;
    return active;
  }, 2000);
})();
