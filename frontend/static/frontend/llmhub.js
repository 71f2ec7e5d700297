// Shared page helpers: CSRF-aware fetch and polling of live data.
(function () {
  function csrfToken() {
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }
  async function api(url, options = {}) {
    const headers = Object.assign({ "Accept": "application/json" }, options.headers || {});
    if (options.method && options.method !== "GET") headers["X-CSRFToken"] = csrfToken();
    if (options.body && !(options.body instanceof FormData)) headers["Content-Type"] = "application/json";
    const response = await fetch(url, Object.assign({}, options, { headers, credentials: "same-origin" }));
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      const message = data && data.error ? data.error.message : response.statusText;
      throw new Error(message);
    }
    return data;
  }
  // Calls fn every `ms` until it returns false; stops while the tab is hidden.
  function poll(fn, ms) {
    let timer = null;
    async function tick() {
      if (document.hidden) { timer = setTimeout(tick, ms); return; }
      let again = true;
      try { again = (await fn()) !== false; } catch (e) { console.warn(e); }
      if (again) timer = setTimeout(tick, ms);
    }
    tick();
    return () => clearTimeout(timer);
  }
  // Pages reload themselves when a job they follow finishes, so new versions and results
  // appear. A reload must never throw away what someone is typing or submitting: once a form
  // on the page has been edited, offer the reload instead of doing it.
  let formEdited = false;
  let submitting = false;
  const markEdited = (event) => { if (event.target.closest && event.target.closest("form")) formEdited = true; };
  document.addEventListener("input", markEdited);
  document.addEventListener("change", markEdited);
  // A form that posts by script (uploads) prevents the default and stays on the page: only a
  // real navigation counts as submitting. Checked after every listener has run.
  document.addEventListener("submit", (event) => {
    setTimeout(() => { if (!event.defaultPrevented) submitting = true; }, 0);
  });
  function refresh(message) {
    if (submitting) return;
    if (!formEdited) { location.reload(); return; }
    if (document.getElementById("refresh-notice")) return;
    const notice = document.createElement("li");
    notice.id = "refresh-notice";
    notice.className = "info";
    notice.textContent = message + " ";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-sm";
    button.textContent = "Reload";
    button.addEventListener("click", () => location.reload());
    notice.appendChild(button);
    let list = document.querySelector("ul.messages");
    if (!list) {
      list = document.createElement("ul");
      list.className = "messages";
      document.querySelector("main").prepend(list);
    }
    list.appendChild(notice);
  }
  window.LLMHub = { api, poll, csrfToken, refresh };
})();

// Draw every element carrying a figure: <div data-figure="id-of-json-script">.
function drawFigures(root) {
  if (!window.Plotly) return;
  (root || document).querySelectorAll("[data-figure]").forEach((el) => {
    const source = document.getElementById(el.dataset.figure);
    if (!source) return;
    const figure = JSON.parse(source.textContent);
    // A figure with no data yet (frontend.charts.waiting) says so instead of drawing axes.
    el.dataset.empty = figure.layout && figure.layout.meta && figure.layout.meta.empty ? "true" : "false";
    Plotly.react(el, figure.data, figure.layout, { responsive: true, displaylogo: false });
  });
}
document.addEventListener("DOMContentLoaded", () => drawFigures());

// Live jobs, the one mechanism every page uses: elements carrying data-job-url and
// data-job-active="true" (written by the {% live_job %} and {% live_jobs %} template tags) poll
// their job's API while it is queued or running, keep its badge, progress bar and message
// current, and refresh the page when it ends, so new versions, results and goal status appear.
const JOB_BADGES = { queued: "badge-muted", running: "badge-info", succeeded: "badge-success", failed: "badge-danger", cancelled: "badge-warning" };
function showJobStatus(el, job) {
  el.querySelectorAll("[data-status]").forEach((badge) => {
    badge.textContent = job.status.charAt(0).toUpperCase() + job.status.slice(1);
    badge.dataset.status = job.status;
    Object.values(JOB_BADGES).forEach((css) => badge.classList.remove(css));
    badge.classList.add(JOB_BADGES[job.status] || "badge-muted");
  });
  const bar = el.querySelector(".progress > div");
  if (bar) bar.style.width = Math.round(job.progress * 100) + "%";
  const message = el.querySelector("[data-job-message]");
  if (message) message.textContent = job.error || job.progress_message || "";
}
document.addEventListener("DOMContentLoaded", () => {
  const rows = Array.from(document.querySelectorAll("[data-job-url][data-job-active='true']"));
  if (!rows.length) return;
  // Several elements may follow the same job (a row and a hidden marker): one request each.
  const byUrl = new Map();
  rows.forEach((row) => { if (!byUrl.has(row.dataset.jobUrl)) byUrl.set(row.dataset.jobUrl, []); byUrl.get(row.dataset.jobUrl).push(row); });
  LLMHub.poll(async () => {
    let finished = false;
    for (const [url, els] of byUrl) {
      const job = await LLMHub.api(url);
      els.forEach((el) => showJobStatus(el, job));
      if (job.status !== "queued" && job.status !== "running") {
        els.forEach((el) => { el.dataset.jobActive = "false"; });
        byUrl.delete(url);
        finished = true;
      }
    }
    if (finished) {
      // What a job's end updates (goal status, results) is written just after its status:
      // give it a moment before reloading.
      setTimeout(() => LLMHub.refresh("A job on this page has finished."), 800);
      return false;
    }
    return byUrl.size > 0;
  }, 1500);
});

// Confirmation before anything that cannot be undone (cancelling a job, deleting): a form or a
// button with data-confirm="question" asks first; dismissing the dialog does nothing at all.
// Capture phase, so the question comes before any other handler (the cancel buttons below).
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) { event.preventDefault(); event.stopImmediatePropagation(); }
}, true);
document.addEventListener("click", (event) => {
  const el = event.target.closest("[data-confirm]:not(form)");
  if (el && !window.confirm(el.dataset.confirm)) { event.preventDefault(); event.stopImmediatePropagation(); }
}, true);

// Cancel buttons that post to the API (job rows, report pages); they carry data-confirm.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-cancel-url]");
  if (!button) return;
  event.preventDefault();
  button.disabled = true;
  try { await LLMHub.api(button.dataset.cancelUrl, { method: "POST" }); location.reload(); }
  catch (e) { alert(e.message); button.disabled = false; }
});

// Uploads with a progress bar: the form posts by XMLHttpRequest and follows the redirect.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("[data-upload-form]");
  if (!form) return;
  event.preventDefault();
  const box = form.querySelector(".upload-progress");
  const bar = box.querySelector(".progress > div");
  const status = form.querySelector("[data-upload-status]");
  const errors = form.querySelector("[data-upload-errors]");
  const button = form.querySelector("button[type=submit]");
  box.hidden = false; errors.hidden = true; button.disabled = true;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", form.action);
  xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
  xhr.setRequestHeader("X-CSRFToken", LLMHub.csrfToken());
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    const pct = Math.round((e.loaded / e.total) * 100);
    bar.style.width = pct + "%";
    status.textContent = `Uploading… ${pct}% (${(e.loaded / 1048576).toFixed(1)} of ${(e.total / 1048576).toFixed(1)} MB)`;
  };
  xhr.upload.onload = () => { status.textContent = "Checking the file…"; };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status === 202 && body.redirect) { window.location = body.redirect; return; }
    button.disabled = false; box.hidden = true;
    // Each error next to its field, all at once; what has no field of its own goes in the box.
    form.querySelectorAll("[data-upload-field-error]").forEach((el) => el.remove());
    const general = [];
    Object.entries(body.errors || { __all__: [{ message: xhr.statusText || "Upload failed" }] })
      .forEach(([field, list]) => {
        const text = list.map((e) => e.message).join(" ");
        const control = field === "__all__" ? null : form.elements[field];
        const container = control && control.closest ? control.closest(".field") : null;
        if (container) {
          const el = document.createElement("div");
          el.className = "errors"; el.dataset.uploadFieldError = field; el.textContent = text;
          container.appendChild(el);
          const details = container.closest("details");
          if (details) details.open = true;
        } else general.push(field === "__all__" ? text : `${field}: ${text}`);
      });
    errors.textContent = general.join(" "); errors.hidden = !general.length;
  };
  xhr.onerror = () => { button.disabled = false; errors.textContent = "The upload was interrupted."; errors.hidden = false; };
  xhr.send(new FormData(form));
});

// Row previews: a table filled from the rows API.
document.addEventListener("DOMContentLoaded", async () => {
  const holder = document.querySelector("[data-preview-url]");
  if (!holder) return;
  try {
    const page = await LLMHub.api(holder.dataset.previewUrl + "?limit=10");
    const table = document.createElement("table");
    table.className = "table preview";
    const head = table.createTHead().insertRow();
    page.columns.forEach((c) => { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); });
    const body = table.createTBody();
    page.rows.forEach((row) => {
      const tr = body.insertRow();
      page.columns.forEach((c) => {
        const value = row[c];
        const text = value === null ? "—" : (typeof value === "object" ? JSON.stringify(value) : String(value));
        const cell = tr.insertCell();
        cell.textContent = text.length > 160 ? text.slice(0, 160) + "…" : text;
        if (text.length > 160) cell.title = text;
      });
    });
    const wrap = document.createElement("div"); wrap.className = "table-wrap"; wrap.appendChild(table);
    holder.replaceChildren(wrap);
    const note = document.createElement("p"); note.className = "muted";
    note.textContent = `First ${page.rows.length} of ${page.total.toLocaleString()} rows.`;
    holder.appendChild(note);
  } catch (e) { holder.textContent = "Could not load rows: " + e.message; }
});
