// A tap on the map (a Bokeh CustomJS callback; args: fig, sink, draw_tools). It is sent to the
// server only when no drawing tool is active, so drawing never starts a search.
const drawing = fig.toolbar.tools.some(t => t.active && draw_tools.includes(t.type ?? t.constructor.__name__));
if (!drawing) {
  sink.data = {x: [cb_obj.x], y: [cb_obj.y], n: [(sink.data.n?.[0] ?? 0) + 1]};
}
