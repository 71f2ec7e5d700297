// The Deploy stage's scripts: copy buttons, the goal gate shown as the version select changes,
// and the playground, which streams an answer from the inference process (through the web
// process's playground view) and records thumbs up or down on it.
(function () {
  "use strict";

  // <button data-copy="#element-id">: copies the element's text.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = source.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      // Pages served over plain http (not localhost) have no clipboard API: select instead.
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand && document.execCommand("copy");
    }
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });

  // Forms with data-gate-form: the chosen version's goal-gate reasons, and the override box
  // when there are any. The server checks again on submit.
  function setUpGate(form) {
    const select = form.elements.version;
    const list = form.querySelector("[data-gate-blockers]");
    const override = form.querySelector("[data-gate-override]");
    if (!select || !list) return;
    async function show() {
      const asked = select.value;
      if (!asked) return;
      let data;
      try {
        data = await LLMHub.api(form.dataset.gateUrl + "?version=" + encodeURIComponent(asked));
      } catch (e) { return; }
      // An answer for a version chosen before the current one: a later answer follows.
      if (select.value !== asked) return;
      list.replaceChildren(...data.blockers.map((reason) => {
        const li = document.createElement("li"); li.textContent = reason; return li;
      }));
      if (override) override.hidden = data.blockers.length === 0;
    }
    select.addEventListener("change", show);
    // A form the server sent back keeps its errors; a fresh one shows the first version's.
    if (!list.children.length) show();
  }

  // --- the playground ----------------------------------------------------------------------

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function formBody(form) {
    const v = (name) => form.elements[name].value;
    const body = {
      system: v("system"), prompt: v("prompt"), max_tokens: v("max_tokens"),
      temperature: v("temperature"), top_p: v("top_p"), stop: v("stop"),
    };
    if (v("seed") !== "") body.seed = v("seed");
    return body;
  }

  // Server-sent events from a fetch body: calls onEvent(object) for each `data:` JSON line.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        block.split("\n").forEach((line) => {
          if (!line.startsWith("data:")) return;
          const data = line.slice(5).trim();
          if (data === "[DONE]") return;
          try { onEvent(JSON.parse(data)); } catch (e) { console.warn("bad event", data); }
        });
      }
    }
  }

  function setUpPlayground(card) {
    const form = card.querySelector("#playground-form");
    const answers = card.querySelector("#playground-answers");
    const labels = JSON.parse(document.getElementById("playground-versions").textContent || "{}");
    const send = form.querySelector("button[type=submit]");

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      form.querySelectorAll(".errors[data-playground-error]").forEach((e) => e.remove());
      const answer = el("div", { class: "card playground-answer", "data-answer": "" });
      const text = el("div", { class: "example answer-text", "data-answer-text": "" });
      const meta = el("div", { class: "muted answer-meta", "data-answer-meta": "" }, "Waiting for the first token…");
      const problem = el("div", { class: "form-errors", "data-answer-error": "", hidden: "" });
      answer.append(text, meta, problem);
      answers.prepend(answer);
      send.disabled = true;

      const started = performance.now();
      let firstToken = null;
      const info = { id: "", version: "", canary: false, usage: null };
      const fail = (message) => { problem.textContent = message; problem.hidden = false; meta.textContent = ""; };
      try {
        const response = await fetch(card.dataset.playgroundUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": LLMHub.csrfToken(), "Accept": "text/event-stream" },
          body: JSON.stringify(formBody(form)),
        });
        if (!response.ok) {
          const data = await response.json().catch(() => null);
          const errors = (data && data.errors) || { __all__: [response.statusText] };
          Object.entries(errors).forEach(([field, list]) => {
            const control = form.elements[field];
            const message = list.map((m) => (typeof m === "string" ? m : m.message)).join(" ");
            if (control && control.closest) {
              const box = el("div", { class: "errors", "data-playground-error": "" }, message);
              control.closest(".field").appendChild(box);
            }
          });
          answer.remove();
          return;
        }
        await readEvents(response, (event) => {
          if (event.error) { fail(event.error.message); return; }
          if (event.llmhub) {
            if (event.llmhub.version_id) info.version = labels[event.llmhub.version_id] || ("version " + event.llmhub.version_id);
            if (event.llmhub.canary) info.canary = true;
            if (event.llmhub.request_id) info.id = event.llmhub.request_id;
            return;
          }
          if (event.id) info.id = event.id;
          if (event.usage) info.usage = event.usage;
          (event.choices || []).forEach((choice) => {
            const piece = (choice.delta && choice.delta.content) || choice.text || "";
            if (piece) {
              if (firstToken === null) firstToken = performance.now() - started;
              text.textContent += piece;
            }
          });
        });
      } catch (e) {
        fail("The playground could not reach this site: " + e.message);
      } finally {
        send.disabled = false;
      }
      if (!problem.hidden) return;
      const latency = performance.now() - started;
      const parts = [
        "response " + (info.id || "—"),
        info.version + (info.canary ? " (canary)" : ""),
        info.usage ? `${info.usage.prompt_tokens} prompt + ${info.usage.completion_tokens} completion tokens` : "",
        `${Math.round(latency)} ms` + (firstToken !== null ? ` (first token ${Math.round(firstToken)} ms)` : ""),
      ].filter(Boolean);
      meta.textContent = parts.join(" · ");
      meta.dataset.responseId = info.id;
      if (!text.textContent) text.textContent = "(an empty answer)";
      if (info.id) answer.appendChild(thumbs(card, info.id));
    });
  }

  function thumbs(card, responseId) {
    const box = el("div", { class: "thumbs", "data-thumbs": responseId });
    const status = el("small", { class: "muted" });
    [[1, "Thumbs up", "A good answer"], [-1, "Thumbs down", "A bad answer"]].forEach(([score, label, title]) => {
      const button = el("button", { type: "button", class: "btn btn-sm", title: title, "data-score": String(score) }, label);
      button.addEventListener("click", async () => {
        box.querySelectorAll("button").forEach((b) => { b.disabled = true; });
        try {
          await LLMHub.api(card.dataset.feedbackUrl, {
            method: "POST", body: JSON.stringify({ response_id: responseId, score: score }),
          });
          status.textContent = score > 0 ? " Thanks: thumbs up recorded." : " Thanks: thumbs down recorded.";
          status.dataset.recorded = String(score);
        } catch (e) {
          status.textContent = " Not recorded: " + e.message;
          box.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        }
      });
      box.appendChild(button);
      box.appendChild(document.createTextNode(" "));
    });
    box.appendChild(status);
    return box;
  }

  function start() {
    document.querySelectorAll("form[data-gate-form]").forEach(setUpGate);
    const card = document.getElementById("playground");
    if (card) setUpPlayground(card);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
