// After a pan or zoom, tell the server what the map shows unless the detail image already covers
// it at a similar scale (a Bokeh CustomJS callback on the map's ranges; args: fig, source, the
// detail image's data (url, x, y, w, h, px), bounds, the basemap's extent, sink, the data
// source the server listens to, and shape, the true-shape constants of a lon/lat map or {}).
// The server picks the image to fetch (explorer/basemap_requests.py) and puts it into ``source``.
// Debounced: a drag or a wheel spin reports once, at its end.
//
// True shape (explorer/true_shape.py, the same formula): a local lon/lat view draws a degree of
// longitude cos(lat0) times as wide as a degree of latitude, so ground distances per screen pixel
// are equal in x and y at its centre; the whole planet stays 2:1, and views between are blended.
const key = source.id;
window._basemapTimers = window._basemapTimers || {};
clearTimeout(window._basemapTimers[key]);
window._basemapTimers[key] = setTimeout(() => {
  const xr = fig.x_range, yr = fig.y_range;
  const vw = xr.end - xr.start, vh = yr.end - yr.start;
  const fw = fig.inner_width || 1000, fh = fig.inner_height || 500;
  if (!(vw > 0 && vh > 0)) return;
  if (shape.full_below !== undefined) {
    const weight = Math.min(1, Math.max(0, (shape.none_above - vh) / (shape.none_above - shape.full_below)));
    if (weight > 0) {
      const lat0 = Math.min(Math.abs((yr.start + yr.end) / 2), shape.max_lat);
      const full = 1 / Math.cos(lat0 * Math.PI / 180);
      const target = vh * (fw / fh) * (1 + weight * (full - 1));
      if (Math.abs(vw - target) > shape.tolerance * target) {
        const cx = (xr.start + xr.end) / 2;
        xr.setv({start: cx - target / 2, end: cx + target / 2});
        return;  // the change calls this again, which reports the view
      }
    }
  }
  const d = source.data;
  if (d.x.length) {
    const covers = d.x[0] <= Math.max(xr.start, bounds[0]) && d.x[0] + d.w[0] >= Math.min(xr.end, bounds[2]) &&
                   d.y[0] <= Math.max(yr.start, bounds[1]) && d.y[0] + d.h[0] >= Math.min(yr.end, bounds[3]);
    const scale = (d.px[0] / d.w[0]) / (fw / vw);  // image pixels per screen pixel
    if (covers && scale > 0.75 && scale < 1.5) return;
  }
  sink.data = {x0: [xr.start], x1: [xr.end], y0: [yr.start], y1: [yr.end], width: [fw], height: [fh],
               n: [(sink.data.n?.[0] ?? 0) + 1]};
}, 150);
