// The confusion matrix's "counts / normalised" toggle: swaps the heatmap's two traces and the
// table's cell texts (frontend/charts_evaluation.py builds the figure with both traces).
document.addEventListener("change", (event) => {
  const input = event.target.closest("[data-confusion-toggle] input[name=confusion-view]");
  if (!input) return;
  const card = input.closest("[data-confusion]");
  const normalised = input.value === "normalised";
  card.dataset.view = input.value;
  card.querySelectorAll("[data-count]").forEach((cell) => {
    cell.textContent = normalised ? cell.dataset.share : cell.dataset.count;
  });
  const chart = card.querySelector("[data-figure]");
  if (window.Plotly && chart && chart.data) {
    Plotly.restyle(chart, { visible: [!normalised, normalised] }, [0, 1]);
  }
});
