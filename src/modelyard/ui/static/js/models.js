// The version page's charts: a forest plot of each gate evaluation's confidence
// intervals and the reference profile's distributions, from the JSON the page embeds.

const OK = "#1a7f37";
const BAD = "#c62828";
const BAR = "#2458d6";
const CONFIG = { displaylogo: false, responsive: true };

function readData() {
  const node = document.getElementById("model-charts");
  return node ? JSON.parse(node.textContent) : { evidence: [], profile: null };
}

// One row per gate with an interval, each on its own x axis (a metric and a difference
// are in different units): the interval as a bar, the estimate as a point when the gate
// recorded one, the line the gate judged against as a dashed rule.
function forest(element, rows) {
  const traces = [];
  const shapes = [];
  const layout = {
    height: 70 + 62 * rows.length,
    margin: { l: 150, r: 20, t: 10, b: 30 },
    showlegend: false,
    grid: { rows: rows.length, columns: 1, pattern: "independent", roworder: "top to bottom" },
  };
  rows.forEach((row, i) => {
    const n = i === 0 ? "" : String(i + 1);
    const color = row.passed ? OK : BAD;
    traces.push({
      x: [row.low, row.high], y: [row.gate, row.gate], xaxis: `x${n}`, yaxis: `y${n}`,
      mode: "lines+markers", line: { color, width: 4 }, marker: { symbol: "line-ns-open", size: 14, color },
      hovertemplate: `${row.gate}: [%{x}]<extra></extra>`,
    });
    if (row.estimate !== null && row.estimate !== undefined) {
      traces.push({
        x: [row.estimate], y: [row.gate], xaxis: `x${n}`, yaxis: `y${n}`, mode: "markers",
        marker: { size: 11, color, symbol: "diamond" }, hovertemplate: `${row.gate}: %{x}<extra></extra>`,
      });
    }
    if (row.reference !== null && row.reference !== undefined) {
      shapes.push({
        type: "line", xref: `x${n}`, yref: `y${n} domain`, x0: row.reference, x1: row.reference,
        y0: 0, y1: 1, line: { color: "#6b7280", dash: "dash", width: 1 },
      });
    }
  });
  layout.shapes = shapes;
  Plotly.newPlot(element, traces, layout, CONFIG);
}

function bars(element, column) {
  const trace = {
    type: "bar", x: column.x, y: column.y, marker: { color: BAR },
    hovertemplate: "%{x}: %{y} rows<extra></extra>",
  };
  const layout = {
    height: 240, margin: { l: 45, r: 10, t: 10, b: 70 },
    xaxis: { type: "category", title: { text: column.axis, font: { size: 11 } }, tickfont: { size: 10 } },
    yaxis: { title: { text: "rows", font: { size: 11 } } },
  };
  Plotly.newPlot(element, [trace], layout, CONFIG);
}

const data = readData();
document.querySelectorAll(".chart.forest").forEach((element) => {
  const evidence = data.evidence[Number(element.dataset.evidence)];
  if (evidence && evidence.evaluation && evidence.evaluation.forest.length) {
    forest(element, evidence.evaluation.forest);
    element.dataset.drawn = "true";
  }
});
if (data.profile) {
  document.querySelectorAll(".chart.profile-chart").forEach((element) => {
    const column = data.profile[element.dataset.group][Number(element.dataset.index)];
    if (column && column.x) {
      bars(element, column);
      element.dataset.drawn = "true";
    }
  });
}
