// One page of hits as thumbnail cards (explorer/results.py, ThumbnailGrid). A click on an image
// focuses its tile, + / − mark it as an example; both go to Python as messages.
export function render({ model, el }) {
  const grid = document.createElement('div');
  grid.className = 'thumb-grid';
  function button(text, title, action, tile_id) {
    const b = document.createElement('button');
    b.textContent = text; b.title = title; b.className = 'mark-' + action;
    b.addEventListener('click', (e) => { e.stopPropagation(); model.send_msg({action, tile_id}); });
    return b;
  }
  function cardClass(it) {
    return 'thumb' + (it.tile_id === model.selected ? ' selected' : '') + (it.mark ? ' ' + it.mark : '');
  }
  function draw() {
    // same tiles as shown (a mark or the highlight changed): update the classes in place,
    // so images are not reloaded and a click in flight still lands on its card
    const shown = Array.from(grid.children);
    if (shown.length === model.items.length && shown.length > 0 &&
        model.items.every((it, i) => shown[i].dataset.tileId === it.tile_id && shown[i].dataset.rank == it.rank &&
                                  shown[i].dataset.distance == it.distance)) {
      model.items.forEach((it, i) => { shown[i].className = cardClass(it); });
      return;
    }
    grid.replaceChildren();
    for (const it of model.items) {
      const card = document.createElement('div');
      card.className = cardClass(it);
      Object.assign(card.dataset, {tileId: it.tile_id, rank: it.rank, distance: it.distance,
                                   time: it.time, lon: it.lon, lat: it.lat});
      const img = document.createElement('img');
      img.decoding = 'async'; img.src = it.src; img.width = 96; img.height = 96; img.alt = it.tile_id; img.title = it.tile_id;
      img.addEventListener('click', () => model.send_msg({action: 'focus', tile_id: it.tile_id}));
      const cap = document.createElement('div');
      cap.className = 'caption';
      cap.textContent = `#${it.rank} · ${it.distance} bits`;
      cap.title = 'rank, and Hamming distance to the query: the number of code bits that differ';
      const marks = document.createElement('div');
      marks.className = 'marks';
      marks.append(button('+', 'positive example', 'positive', it.tile_id),
                   button('−', 'negative example', 'negative', it.tile_id));
      card.append(img, cap, marks);
      grid.append(card);
    }
  }
  draw();
  model.on('items', draw);
  model.on('selected', draw);
  return grid;
}
