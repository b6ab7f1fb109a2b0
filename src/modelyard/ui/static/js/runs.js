// The runs pages: selecting runs to compare, and metric charts (one per metric, a curve
// per run, by step or by time since each run started) drawn from the page's JSON block.

const PALETTE = [
  "#2458d6", "#d6452a", "#1a7f37", "#9a6700", "#8250df",
  "#0a7e8c", "#c2185b", "#5d4037", "#455a64", "#7cb342",
];

// plotly.js, once it has run. The compare page names it in #charts[data-plotly] and this
// module loads it after asking for the first screen's curves, so the two overlap; the run
// page loads it with a deferred script, which has run by DOMContentLoaded (the document
// is "interactive" both before and after it: the load event settles that case).
let plotlyLoading = null;
function plotlyReady(src) {
  if (typeof Plotly !== "undefined") return Promise.resolve();
  if (src) {
    plotlyLoading ??= new Promise((resolve) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve();
      script.onerror = () => resolve(); // the chart is left empty; the console says why
      document.head.appendChild(script);
    });
    return plotlyLoading;
  }
  if (document.readyState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    document.addEventListener("DOMContentLoaded", () => resolve(), { once: true });
    window.addEventListener("load", () => resolve(), { once: true });
  });
}

function setUpSelection() {
  const button = document.getElementById("compare-button");
  if (!button) return;
  const boxes = () => Array.from(document.querySelectorAll("input.select-run"));
  const count = document.getElementById("selected-count");
  const update = () => {
    const n = boxes().filter((b) => b.checked).length;
    button.disabled = n < 1;
    count.textContent = n ? `${n} selected` : "select runs to compare";
  };
  document.addEventListener("change", (event) => {
    if (event.target.id === "select-all") {
      for (const box of boxes()) box.checked = event.target.checked;
    }
    if (event.target.id === "select-all" || event.target.classList.contains("select-run")) update();
  });
  update();
}

function traces(series, xAxis) {
  return series.map((s, i) => {
    const x = xAxis === "time" ? s.time.map((t) => (t - s.time[0]) / 1000) : s.step;
    return {
      x,
      y: s.value,
      name: s.name,
      mode: s.step.length > 1 ? "lines" : "markers",
      type: "scatter", // SVG: scattergl compiles shaders with new Function, which the CSP refuses
      line: { color: PALETTE[i % PALETTE.length], width: 1.5 },
      marker: { color: PALETTE[i % PALETTE.length] },
      connectgaps: false,
    };
  });
}

function layoutOf(key, xAxis, runs) {
  return {
    title: { text: key, font: { size: 14 } },
    margin: { l: 50, r: 10, t: 36, b: 40 },
    xaxis: { title: { text: xAxis === "time" ? "seconds since start" : "step" } },
    showlegend: runs > 1,
    legend: { orientation: "h" },
    height: 320,
  };
}

// One chart per metric. Charts are drawn when they come near the viewport (20 metrics x
// 10 runs x 1,000 points would otherwise hold the page for seconds); the holder gets
// data-first-drawn once the first screen is drawn and data-drawn once all are.
// The curves come embedded (#curves-data: {key: [series, ...]}, the run page) or are
// fetched per chart when it is shown (#curves-spec: {keys, runs, source}, the compare).
function drawCharts() {
  const block = document.getElementById("curves-data");
  const specBlock = document.getElementById("curves-spec");
  const holder = document.getElementById("charts");
  if ((!block && !specBlock) || !holder) return;
  const curves = block ? JSON.parse(block.textContent) : {};
  const spec = specBlock ? JSON.parse(specBlock.textContent) : null;
  const keys = spec ? spec.keys : Object.keys(curves);
  const loading = {}; // key -> the promise of its curves (each fetched once)
  const fetchCurves = async (key) => {
    const query = new URLSearchParams(spec.runs.map((id) => ["run", id]));
    query.append("key", key);
    const response = await fetch(`${spec.source}?${query}`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${key}: HTTP ${response.status}`);
    curves[key] = (await response.json()).series;
    return curves[key];
  };
  const load = (key) => {
    if (key in curves) return Promise.resolve(curves[key]);
    if (!(key in loading)) {
      loading[key] = fetchCurves(key);
      loading[key].catch(() => delete loading[key]); // a failed fetch is tried again
    }
    return loading[key];
  };
  const select = document.getElementById("x-axis");
  const xAxis = () => (select ? select.value : "step");
  const pending = new Set();
  const draw = async (div) => {
    const series = await load(div.dataset.metric); // fetched while plotly.js is parsed
    await plotlyReady(holder.dataset.plotly);
    if (typeof Plotly === "undefined") return;
    Plotly.react(div, traces(series, xAxis()), layoutOf(div.dataset.metric, xAxis(), series.length),
      { displaylogo: false, responsive: true });
    div.dataset.drawn = "true";
    pending.delete(div);
    if (pending.size === 0) holder.dataset.drawn = "true";
  };
  const observer = new IntersectionObserver(async (entries) => {
    const shown = entries.filter((e) => e.isIntersecting && !e.target.dataset.drawn);
    for (const entry of shown) observer.unobserve(entry.target);
    await Promise.all(shown.map((entry) => draw(entry.target)));
    if (!holder.dataset.firstDrawn) performance.mark("charts-first-drawn");
    holder.dataset.firstDrawn = "true";
  }, { rootMargin: "0px" });
  for (const key of keys) {
    const div = document.createElement("div");
    div.id = `chart-${key.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    div.className = "chart panel";
    div.dataset.metric = key;
    holder.appendChild(div);
    pending.add(div);
    observer.observe(div);
  }
  // the first screen's curves are asked for now, not once the observer first reports
  // (that waits for plotly.js to run); the observer's draw then finds them loading
  if (spec) {
    for (const div of holder.children) {
      if (div.getBoundingClientRect().top >= window.innerHeight) break;
      load(div.dataset.metric).catch(() => {});
    }
  }
  plotlyReady(holder.dataset.plotly);
  if (select) {
    select.addEventListener("change", () => {
      for (const div of holder.querySelectorAll(".chart[data-drawn]")) draw(div);
    });
  }
}

setUpSelection();
drawCharts();
