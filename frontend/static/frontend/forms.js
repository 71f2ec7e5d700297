// Forms that follow the data: plain attributes, one small script for every form.
//
// - data-show-when="field=a,b" (or "field!=a"; several conditions joined by ";" must all hold)
//   shows an element only while the form's field has one of the values; data-hide-when is the
//   opposite. Controls inside a hidden element are disabled, so the browser neither validates
//   nor submits them (the server ignores those fields too).
// - a select with data-splits-from="version_field" is refilled with the chosen version's
//   splits (the version select carries data-version-splits='{"pk": ["train", ...]}') and set
//   to the first name of data-prefer present, else the first split (data-prefer-first) or none.
// - an input with data-follows="field" data-template="prefix-{value}" follows that field's value
//   until the user types a value of their own; with data-values='{"a": "1", "*": "2"}' instead
//   of a template it takes the value listed for the field's value ("*": any other).
(function () {
  "use strict";

  function valueOf(form, name) {
    const control = form.elements[name];
    if (!control || control.disabled) return "";
    if (control instanceof RadioNodeList) return control.value;
    if (control.type === "checkbox") return control.checked ? control.value : "";
    return control.value;
  }

  function holds(form, condition) {
    return condition.split(";").every((part) => {
      const negate = part.includes("!=");
      const [name, values] = part.split(negate ? "!=" : "=");
      const inList = values.split(",").map((v) => v.trim()).includes(valueOf(form, name.trim()));
      return negate ? !inList : inList;
    });
  }

  function toggle(form) {
    // Conditions may depend on fields that are themselves toggled: settle in a few passes.
    for (let pass = 0; pass < 3; pass++) {
      let changed = false;
      form.querySelectorAll("[data-show-when], [data-hide-when]").forEach((el) => {
        const hidden = el.dataset.showWhen !== undefined
          ? !holds(form, el.dataset.showWhen) : holds(form, el.dataset.hideWhen);
        if (el.hidden !== hidden) { el.hidden = hidden; changed = true; }
      });
      form.querySelectorAll("input, select, textarea").forEach((control) => {
        const container = control.closest("[data-show-when], [data-hide-when]");
        if (!container) return;
        let hidden = false;
        for (let el = container; el && el !== form; el = el.parentElement) {
          if (el.hidden) { hidden = true; break; }
        }
        if (control.disabled !== hidden) { control.disabled = hidden; changed = true; }
      });
      if (!changed) break;
    }
  }

  function refillSplits(form, select) {
    const source = form.elements[select.dataset.splitsFrom];
    if (!source) return;
    const map = JSON.parse(source.dataset.versionSplits || "{}");
    const names = map[source.value] || [];
    const previous = select.value;
    select.innerHTML = "";
    const blank = new Option(select.dataset.blank || "—", "");
    select.add(blank);
    names.forEach((name) => select.add(new Option(name, name)));
    const prefer = (select.dataset.prefer || "").split(",").filter(Boolean);
    let chosen = prefer.find((name) => names.includes(name));
    if (chosen === undefined && names.includes(previous) && previous) chosen = previous;
    if (chosen === undefined) chosen = select.dataset.preferFirst === "true" && names.length ? names[0] : "";
    select.value = chosen;
  }

  function follow(form, input, initial) {
    const source = form.elements[input.dataset.follows];
    if (!source) return;
    const values = input.dataset.values ? JSON.parse(input.dataset.values) : null;
    const expected = values
      ? (v) => String(v in values ? values[v] : values["*"])
      : (v) => input.dataset.template.replace("{value}", v);
    let last = expected(source.value);
    if (initial && !input.value) input.value = last;
    source.addEventListener("change", () => {
      const next = expected(source.value);
      // Only a name the form made itself is replaced: never one the user typed.
      if (!input.value || input.value === last) input.value = next;
      last = next;
    });
  }

  function setUp(form) {
    form.querySelectorAll("select[data-splits-from]").forEach((select) => {
      const source = form.elements[select.dataset.splitsFrom];
      if (source) source.addEventListener("change", () => { refillSplits(form, select); toggle(form); });
    });
    form.querySelectorAll("[data-follows][data-template], [data-follows][data-values]")
      .forEach((input) => follow(form, input, true));
    form.addEventListener("change", () => toggle(form));
    form.addEventListener("input", () => toggle(form));
    toggle(form);
  }

  function start() { document.querySelectorAll("form").forEach(setUp); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  window.LLMHubForms = { toggle: toggle, refillSplits: refillSplits };
})();
