// A tuning study's charts: the optimization history (each complete trial's value and the
// best so far) and the parameter importances, from the JSON the page embeds.

const CONFIG = { displaylogo: false, responsive: true };
const node = document.getElementById("study-charts");
const data = node ? JSON.parse(node.textContent) : null;

const history = document.getElementById("history-chart");
if (data && history && data.history.numbers.length) {
  Plotly.newPlot(
    history,
    [
      { x: data.history.numbers, y: data.history.values, mode: "markers", name: "trial value",
        marker: { color: "#2458d6", size: 8 } },
      { x: data.history.numbers, y: data.history.best, mode: "lines", name: `best so far (${data.direction})`,
        line: { color: "#c62828", shape: "hv" } },
    ],
    { height: 320, margin: { l: 55, r: 10, t: 10, b: 40 }, xaxis: { title: { text: "trial" } },
      yaxis: { title: { text: "objective value" } }, legend: { orientation: "h", y: -0.2 } },
    CONFIG,
  );
  history.dataset.drawn = "true";
}

const importance = document.getElementById("importance-chart");
if (data && importance && data.importances) {
  const names = Object.keys(data.importances).reverse();
  Plotly.newPlot(
    importance,
    [{ type: "bar", orientation: "h", y: names, x: names.map((n) => data.importances[n]),
       marker: { color: "#2458d6" }, hovertemplate: "%{y}: %{x:.3f}<extra></extra>" }],
    { height: 60 + 40 * names.length, margin: { l: 110, r: 10, t: 10, b: 40 },
      xaxis: { title: { text: "importance (fANOVA, sums to 1)" }, rangemode: "tozero" } },
    CONFIG,
  );
  importance.dataset.drawn = "true";
}
