// Draws the plotly figures a page embeds as JSON: <script type="application/json"
// id="figures"> holds {name: {data, layout}}; each is drawn into #chart-NAME when that
// element exists. A drawn chart gets data-drawn="true" (the browser tests wait for it).

const CONFIG = { displaylogo: false, responsive: true };

export function readFigures(id = "figures") {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : {};
}

export async function drawFigures(id = "figures") {
  const figures = readFigures(id);
  for (const [name, figure] of Object.entries(figures)) {
    const element = document.getElementById(`chart-${name}`);
    if (!element || !figure) continue;
    await Plotly.newPlot(element, figure.data, figure.layout, CONFIG);
    element.dataset.drawn = "true";
  }
}
