// The rater screen: one item at a time, keyboard first, through the rater API.
//
// - The page carries no item: the script asks the API for the rater's next assignment and
//   shows its prompt and responses in the order the API gives (the order recorded on the
//   assignment, for position bias). Responses are named by their position only (A/B, 1, 2...):
//   nothing here names a model.
// - Keys: pairwise 1/2/3/4 (A, B, tie, both bad); ranking: arrows choose a response, a digit
//   gives it that rank; rating: arrows move between responses (left/right) and criteria
//   (up/down), 1-5 rate; correction: arrows choose the response, E edits it. Enter submits
//   (Ctrl+Enter from the text), S skips (asks a reason), U undoes the last, I toggles the
//   instructions. Keys typed into a text field stay text (Esc leaves the field).
// - A judgment is never lost: it is kept in localStorage until the server has committed it,
//   the next item loads only after that, and an error (a session that ended, the network) is
//   shown with the answer still on screen; a kept answer is sent again when the page opens.
(function () {
  "use strict";
  const root = document.getElementById("rater");
  if (!root || !root.dataset.nextUrl) return;

  const task = root.dataset.task;
  const pageCriteria = JSON.parse(document.getElementById("rater-criteria").textContent || "[]");
  const pendingKey = `llmhub-rater-pending-${root.dataset.user}-${root.dataset.campaign}`;
  const el = (id) => document.getElementById(id);
  const itemCard = el("item"), doneCard = el("done"), status = el("status");
  const PAIRWISE = [["a", "A is better"], ["b", "B is better"], ["tie", "Tie"], ["both_bad", "Both bad"]];

  let state = null;   // the assignment on screen and the answer being built
  let busy = false;   // a request is in flight: keys wait

  function say(message, isError) {
    status.textContent = message || "";
    status.classList.toggle("error", Boolean(isError));
  }

  function letter(position) { return task === "pairwise" ? "AB"[position - 1] || String(position) : String(position); }

  function currentCriteria(payload) {
    const given = payload && ((payload.campaign && payload.campaign.criteria) || payload.criteria);
    return (given && given.length ? given : pageCriteria).map(String);
  }

  // The API's answer, whatever its nesting: {assignment: {...}, item: {...}} or flat.
  function parse(data) {
    if (!data) return null;
    const assignment = data.assignment !== undefined ? data.assignment : data;
    if (!assignment) return null;
    const id = assignment.id !== undefined ? assignment.id : (assignment.assignment_id !== undefined ? assignment.assignment_id : data.assignment_id);
    if (id === undefined || id === null) return null;
    const item = assignment.item || data.item || data;
    const responses = (assignment.responses || item.responses || []).map((r, i) => (
      typeof r === "string" ? { position: i + 1, text: r } : { position: r.position || i + 1, text: r.text || "", label: r.label || "" }
    )).sort((x, y) => x.position - y.position);
    return {
      id: id,
      prompt: item.prompt || "",
      responses: responses,
      criteria: currentCriteria(data),
      progress: data.progress || assignment.progress || null,
    };
  }

  function showProgress(progress) {
    if (!progress) return;
    const done = progress.done || 0;
    const total = progress.total_for_me || progress.total || 0;
    el("progress-text").textContent = total ? `${done} of ${total} judged` : `${done} judged`;
    el("progress-bar").style.width = total ? Math.round((100 * done) / total) + "%" : "0%";
  }

  function show(assignment) {
    if (!assignment) {
      state = null;
      itemCard.hidden = true;
      doneCard.hidden = false;
      return;
    }
    state = {
      assignment: assignment,
      n: assignment.responses.length,
      current: 0,
      criterion: 0,
      choice: null,
      reason: "",
      ranks: {},
      ratings: assignment.responses.map(() => ({})),
      correctionFor: 1,
      correctionEdited: false,
      startedAt: performance.now(),
    };
    doneCard.hidden = true;
    itemCard.hidden = false;
    el("controls").replaceChildren();  // made again for this item (a reason, a correction)
    el("prompt").textContent = assignment.prompt;
    showProgress(assignment.progress);
    render();
    itemCard.dataset.assignment = String(assignment.id);
  }

  function button(text, pressed, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn-sm";
    b.textContent = text;
    b.setAttribute("aria-pressed", pressed ? "true" : "false");
    b.tabIndex = -1;
    b.addEventListener("click", onClick);
    return b;
  }

  function render() {
    const s = state;
    const holder = el("responses");
    holder.replaceChildren();
    s.assignment.responses.forEach((r, i) => {
      const card = document.createElement("div");
      card.className = "response";
      card.dataset.position = String(r.position);
      if (i === s.current) card.classList.add("current");
      const head = document.createElement("h3");
      const name = document.createElement("span");
      name.textContent = task === "pairwise" ? `Response ${letter(r.position)}` : `Response ${r.position}`;
      // Only a campaign that is not blind sends a response's label.
      if (r.label) { const tag = document.createElement("small"); tag.className = "tag"; tag.textContent = r.label; name.append(" ", tag); }
      head.appendChild(name);
      const badge = document.createElement("span");
      badge.className = "rank";
      if (task === "ranking" && s.ranks[r.position]) badge.textContent = `rank ${s.ranks[r.position]}`;
      if (task === "pairwise" && (s.choice === "a" || s.choice === "b") && letter(r.position).toLowerCase() === s.choice) {
        card.classList.add("chosen");
        badge.textContent = "better";
      }
      if (task === "correction" && s.correctionFor === r.position) badge.textContent = "to correct";
      head.appendChild(badge);
      card.appendChild(head);
      const text = document.createElement("div");
      text.className = "text";
      text.textContent = r.text;
      card.appendChild(text);
      if (task === "rating") {
        s.assignment.criteria.forEach((criterion, c) => {
          const row = document.createElement("div");
          row.className = "criterion";
          row.dataset.criterion = criterion;
          if (i === s.current && c === s.criterion) row.classList.add("current");
          const label = document.createElement("span");
          label.textContent = criterion;
          row.appendChild(label);
          const scale = document.createElement("span");
          scale.className = "scale";
          for (let score = 1; score <= 5; score++) {
            scale.appendChild(button(String(score), s.ratings[i][criterion] === score, () => {
              s.current = i; s.criterion = c; rate(score);
            }));
          }
          row.appendChild(scale);
          card.appendChild(row);
        });
      }
      card.addEventListener("click", () => { if (s.current !== i) { s.current = i; if (task === "correction") chooseCorrection(); render(); } });
      holder.appendChild(card);
    });
    renderControls();
  }

  function renderControls() {
    const s = state;
    const controls = el("controls");
    if (task === "pairwise") {
      if (!controls.querySelector(".choices")) {
        controls.replaceChildren();
        const choices = document.createElement("div");
        choices.className = "choices";
        controls.appendChild(choices);
        const reason = document.createElement("input");
        reason.type = "text"; reason.id = "reason"; reason.maxLength = 2000;
        reason.placeholder = "Reason (optional; R to type it, Enter to submit)";
        reason.style.width = "100%"; reason.style.marginTop = ".75rem"; reason.autocomplete = "off";
        reason.addEventListener("input", () => { s.reason = reason.value; });
        controls.appendChild(reason);
      }
      const choices = controls.querySelector(".choices");
      choices.replaceChildren(...PAIRWISE.map(([value, text], k) => {
        const b = button(`${k + 1} · ${text}`, s.choice === value, () => { choose(value); });
        b.dataset.choice = value;
        return b;
      }));
      const reason = el("reason");
      if (reason.value !== s.reason) reason.value = s.reason;
    } else if (task === "correction") {
      if (!el("correction")) {
        controls.replaceChildren();
        const label = document.createElement("label");
        label.htmlFor = "correction";
        label.textContent = "The corrected response (E to edit, Ctrl+Enter to submit, Esc to leave the text)";
        const area = document.createElement("textarea");
        area.id = "correction"; area.rows = 6; area.style.width = "100%"; area.maxLength = 20000;
        area.addEventListener("input", () => { s.correctionEdited = true; });
        controls.append(label, area);
        chooseCorrection();
      }
    } else if (task === "ranking") {
      const ranked = Object.keys(s.ranks).length;
      controls.textContent = `${ranked} of ${s.n} ranked`;
    } else if (task === "rating") {
      const rated = s.ratings.reduce((sum, r) => sum + Object.keys(r).length, 0);
      controls.textContent = `${rated} of ${s.n * s.assignment.criteria.length} ratings given`;
    }
  }

  function chooseCorrection() {
    const s = state;
    const area = el("correction");
    if (!area) return;
    const response = s.assignment.responses[s.current];
    if (!s.correctionEdited || !area.value.trim()) { area.value = response.text; s.correctionEdited = false; }
    s.correctionFor = response.position;
  }

  function choose(value) { state.choice = value; say(""); render(); }

  function rank(k) {
    const s = state;
    if (k < 1 || k > s.n) return;
    const position = s.assignment.responses[s.current].position;
    Object.keys(s.ranks).forEach((p) => { if (s.ranks[p] === k) delete s.ranks[p]; });
    s.ranks[position] = k;
    // On to the next response without a rank.
    for (let step = 1; step <= s.n; step++) {
      const next = (s.current + step) % s.n;
      if (!s.ranks[s.assignment.responses[next].position]) { s.current = next; break; }
    }
    say(""); render();
  }

  function rate(score) {
    const s = state;
    const criteria = s.assignment.criteria;
    s.ratings[s.current][criteria[s.criterion]] = score;
    // On to the next criterion, then the next response.
    if (s.criterion < criteria.length - 1) s.criterion += 1;
    else if (s.current < s.n - 1) { s.current += 1; s.criterion = 0; }
    say(""); render();
  }

  function move(dx, dy) {
    const s = state;
    if (dx) s.current = Math.min(s.n - 1, Math.max(0, s.current + dx));
    if (dy && task === "rating") s.criterion = Math.min(s.assignment.criteria.length - 1, Math.max(0, s.criterion + dy));
    if (task === "correction" && dx) chooseCorrection();
    render();
    const card = el("responses").children[s.current];
    if (card && card.scrollIntoView) card.scrollIntoView({ block: "nearest" });
  }

  // The judgment as the rater saw it (positions as shown); the API maps them to the item.
  function value() {
    const s = state;
    if (task === "pairwise") {
      if (!s.choice) throw new Error("Choose first: 1 A, 2 B, 3 tie, 4 both bad.");
      return { choice: s.choice, reason: s.reason.trim() };
    }
    if (task === "ranking") {
      const positions = s.assignment.responses.map((r) => r.position);
      if (positions.some((p) => !s.ranks[p])) throw new Error("Give every response a rank first.");
      return { ranking: positions.slice().sort((x, y) => s.ranks[x] - s.ranks[y]) };
    }
    if (task === "rating") {
      const criteria = s.assignment.criteria;
      const missing = s.ratings.findIndex((r) => criteria.some((c) => !r[c]));
      if (missing >= 0) throw new Error(`Rate response ${missing + 1} on every criterion first.`);
      return { ratings: s.ratings.map((r) => Object.fromEntries(criteria.map((c) => [c, r[c]]))) };
    }
    const text = (el("correction").value || "");
    if (!text.trim()) throw new Error("Write the corrected response first.");
    return { response: s.correctionFor, text: text };
  }

  function url(template, id) { return template.replace("{id}", String(id)); }

  function keep(pending) { try { localStorage.setItem(pendingKey, JSON.stringify(pending)); } catch (e) { /* private mode */ } }
  function forget() { try { localStorage.removeItem(pendingKey); } catch (e) { /* private mode */ } }
  function kept() { try { return JSON.parse(localStorage.getItem(pendingKey) || "null"); } catch (e) { return null; } }

  async function send(pending) {
    await LLMHub.api(url(root.dataset.judgmentUrl, pending.assignment), {
      method: "POST", body: JSON.stringify(pending.body),
    });
    forget();
  }

  async function next() {
    const data = await LLMHub.api(root.dataset.nextUrl, { method: "POST" });
    showProgress(data && data.progress);
    show(parse(data));
  }

  async function run(action) {
    if (busy) return;
    busy = true;
    root.setAttribute("aria-busy", "true");
    try { await action(); }
    catch (e) { say(e.message, true); }
    finally { busy = false; root.removeAttribute("aria-busy"); }
  }

  function submit() {
    if (!state) return;
    let body;
    try {
      body = { value: value(), seconds_spent: Math.round((performance.now() - state.startedAt) / 100) / 10 };
    } catch (e) { say(e.message, true); return; }
    const pending = { assignment: state.assignment.id, body: body };
    run(async () => {
      keep(pending);  // until the server has it
      say("Saving…");
      try { await send(pending); }
      catch (e) {
        throw new Error(`Not saved: ${e.message} Your answer is still here (and kept in this browser): press Enter to try again, after signing in again if your session ended.`);
      }
      say("Saved.");
      await next();
    });
  }

  function undo() {
    run(async () => {
      const data = await LLMHub.api(root.dataset.undoUrl, { method: "POST" });
      const assignment = parse(data);
      if (!assignment) { say("Nothing to undo."); return; }
      show(assignment);
      say("Your last judgment is withdrawn: judge the item again.");
    });
  }

  const dialog = el("skip-dialog");
  function openSkip() {
    if (!state) return;
    el("skip-reason").value = "";
    el("skip-error").hidden = true;
    if (dialog.showModal) dialog.showModal(); else dialog.setAttribute("open", "");
    el("skip-reason").focus();
  }
  function closeSkip() { if (dialog.open) dialog.close(); }
  el("skip-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reason = el("skip-reason").value.trim();
    if (!reason) { el("skip-error").textContent = "Say why you skip it."; el("skip-error").hidden = false; return; }
    const id = state.assignment.id;
    closeSkip();
    run(async () => {
      await LLMHub.api(url(root.dataset.skipUrl, id), { method: "POST", body: JSON.stringify({ reason: reason }) });
      say("Skipped.");
      await next();
    });
  });

  document.addEventListener("keydown", (event) => {
    if (dialog.open) return;  // the skip dialog's own form: Enter skips, Esc closes it
    const target = event.target;
    const typing = target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type === "text"));
    if (typing) {
      if (event.key === "Escape") { target.blur(); event.preventDefault(); }
      else if (event.key === "Enter" && (event.ctrlKey || event.metaKey || target.tagName === "INPUT")) { event.preventDefault(); target.blur(); submit(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    let handled = true;
    if (key === "i" || key === "I") { const d = el("instructions"); d.open = !d.open; }
    else if (key === "u" || key === "U") undo();
    else if (busy || !state) handled = false;
    else if (key === "Enter") submit();
    else if (key === "s" || key === "S") openSkip();
    else if (key === "ArrowLeft") move(-1, 0);
    else if (key === "ArrowRight") move(1, 0);
    else if (key === "ArrowUp" && task === "rating") move(0, -1);
    else if (key === "ArrowDown" && task === "rating") move(0, 1);
    else if (/^[1-9]$/.test(key)) {
      const k = Number(key);
      if (task === "pairwise" && k <= 4) choose(PAIRWISE[k - 1][0]);
      else if (task === "ranking") rank(k);
      else if (task === "rating" && k <= 5) rate(k);
      else handled = false;
    }
    else if ((key === "r" || key === "R") && task === "pairwise") el("reason").focus();
    else if ((key === "e" || key === "E") && task === "correction") el("correction").focus();
    else handled = false;
    if (handled) event.preventDefault();
  });
  el("submit").addEventListener("click", submit);
  el("skip").addEventListener("click", openSkip);
  el("undo").addEventListener("click", undo);

  // First a judgment kept from an earlier visit (the session may have ended under it), then
  // the next item.
  run(async () => {
    const pending = kept();
    if (pending) {
      try { await send(pending); say("Your last answer, kept in this browser, is now saved."); }
      catch (e) {
        if (/already|skipped|expired/i.test(e.message)) forget();
        else { say(`A kept answer could not be saved yet: ${e.message}`, true); }
      }
    }
    await next();
  });
})();
