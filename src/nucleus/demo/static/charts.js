/**
 * Live line charts on a canvas, for the demo dashboard. No dependencies.
 *
 *   const chart = new LineChart(canvas, { series: [{ name: "in", color: "#2f6fde" }], span: 60 });
 *   chart.push(t, [value]);   // t in seconds; redraws on the next animation frame
 *
 * The y axis starts at 0 and ends at a round number above the largest value
 * shown, labelled there and at 0; the x axis is the last `span` seconds, the
 * newest point at the right (until `span` seconds have arrived, the points
 * there are spread over the whole width).
 * Points may arrive out of order (history after live ones). The canvas's `data-points` attribute holds how many points are drawn.
 *
 * @module charts
 */

const GRID = "#e7eaf0";
const LABEL = "#687385";

/** The smallest 1, 2 or 5 × 10^k at or above `value` (1 for 0). */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{series: {name: string, color: string}[], span?: number, format?: (v: number) => string}} options
   */
  constructor(canvas, { series, span = 60, format = (v) => String(Math.round(v)) }) {
    this.canvas = canvas;
    this.series = series;
    this.span = span;
    this.format = format;
    this.points = []; // [t, values[]], oldest first
    this.pending = false;
    new ResizeObserver(() => this.schedule()).observe(canvas);
  }

  /** Add a point (in time order, whenever it arrives; a repeated `t` is ignored) and redraw soon. */
  push(t, values) {
    const points = this.points;
    let i = points.length;
    while (i > 0 && points[i - 1][0] > t) i--;
    if (i > 0 && points[i - 1][0] === t) return;
    points.splice(i, 0, [t, values]);
    const newest = points.at(-1)[0];
    while (points.length > 2 && points[1][0] < newest - this.span) points.shift();
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const { canvas, points, series } = this;
    const ratio = globalThis.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    canvas.dataset.points = String(points.length);

    g.font = "11px system-ui, sans-serif";
    const top = niceCeiling(Math.max(0, ...points.flatMap(([, values]) => values)));
    const pad = { left: Math.ceil(g.measureText(this.format(top)).width) + 12, right: 8, top: 22, bottom: 8 };
    const plotWidth = width - pad.left - pad.right;
    const plotHeight = height - pad.top - pad.bottom;
    const newest = points.length ? points.at(-1)[0] : 0;
    const range = points.length > 1 ? Math.min(this.span, newest - points[0][0]) : 0;
    const x = (t) => pad.left + plotWidth * (range > 0 ? 1 - (newest - t) / range : 1);
    const y = (v) => pad.top + plotHeight * (1 - v / top);

    g.textBaseline = "middle";
    g.lineWidth = 1;
    for (const fraction of [0, 0.5, 1]) {
      const value = top * fraction;
      g.strokeStyle = GRID;
      g.beginPath();
      g.moveTo(pad.left, Math.round(y(value)) + 0.5);
      g.lineTo(width - pad.right, Math.round(y(value)) + 0.5);
      g.stroke();
      if (fraction === 0.5) continue; // a line, no label: halves of small counts read badly
      g.fillStyle = LABEL;
      g.textAlign = "right";
      g.fillText(this.format(value), pad.left - 6, y(value));
    }

    g.save();
    g.beginPath();
    g.rect(pad.left, pad.top - 2, plotWidth, plotHeight + 4);
    g.clip();
    series.forEach(({ color }, index) => {
      if (points.length < 1) return;
      g.beginPath();
      points.forEach(([t, values], i) => (i ? g.lineTo : g.moveTo).call(g, x(t), y(values[index] ?? 0)));
      g.strokeStyle = color;
      g.lineWidth = 2;
      g.lineJoin = "round";
      g.stroke();
      if (index === 0 && points.length > 1) {
        g.lineTo(x(newest), y(0));
        g.lineTo(x(points[0][0]), y(0));
        g.closePath();
        g.globalAlpha = 0.08;
        g.fillStyle = color;
        g.fill();
        g.globalAlpha = 1;
      }
    });
    g.restore();

    // Legend: each series with its latest value.
    let left = pad.left;
    g.textAlign = "left";
    const latest = points.at(-1)?.[1] ?? [];
    series.forEach(({ name, color }, index) => {
      const text = `${name} ${latest[index] == null ? "–" : this.format(latest[index])}`;
      g.fillStyle = color;
      g.fillRect(left, 7, 10, 3);
      g.fillStyle = LABEL;
      g.fillText(text, left + 14, 9);
      left += 24 + g.measureText(text).width;
    });
  }
}
