// The contact sheet's controls, inlined into index.html. Plain ES2017, no modules and no fetch():
// works from file:// in any current browser.
(function () {
  var sheet = document.getElementById('sheet'), sortSel = document.getElementById('sort'),
      desc = document.getElementById('desc');
  // a unit is a card, or a sweep's section: units are sorted as wholes
  var units = Array.prototype.slice.call(sheet.children);

  function cards(u) {
    return u.classList.contains('card') ? [u] : Array.prototype.slice.call(u.querySelectorAll('.card'));
  }
  function val(c, k) {
    var v = c.getAttribute('data-s-' + k);
    if (v === null || v === '') return null;
    var n = Number(v);
    return isFinite(n) && /^[-+0-9.eE]+$/.test(v) ? n : v;
  }
  // a sweep sorts by the smallest value among its cards
  function unitVal(u, k) {
    var vs = cards(u).map(function (c) { return val(c, k); }).filter(function (v) { return v !== null; });
    if (!vs.length) return null;
    if (typeof vs[0] === 'number') {
      return Math.min.apply(null, vs.filter(function (v) { return typeof v === 'number'; }));
    }
    return vs.sort()[0];
  }
  // missing values last, whichever the direction
  function cmp(a, b) {
    if (a === b) return 0;
    if (a === null) return 1;
    if (b === null) return -1;
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }
  // the status filters are pages of their own (links); sorting orders this page's units
  function apply() {
    var k = sortSel.value, sign = desc.checked ? -1 : 1;
    units.slice().sort(function (a, b) {
      var r = cmp(unitVal(a, k), unitVal(b, k));
      if (r === 0) r = cmp(unitVal(a, 'order'), unitVal(b, 'order'));
      else if (unitVal(a, k) !== null && unitVal(b, k) !== null) r *= sign;
      return r;
    }).forEach(function (u) { sheet.appendChild(u); });
  }

  sortSel.addEventListener('change', apply);
  desc.addEventListener('change', apply);

  // Where none of a video's sources can play (no decoder, or each one failed), show its animated
  // webp/gif, else its poster, else say so. `v`: the video, or the one its template holds.
  function fallback(media, v) {
    var f = v.getAttribute('data-fallback'), src = f || v.getAttribute('poster');
    if (!src) {
      var p = document.createElement('div');
      p.className = 'placeholder';
      p.textContent = 'this browser cannot play the video';
      media.replaceChildren(p);
      return;
    }
    var img = document.createElement('img');
    img.src = src;
    img.alt = f ? 'animated fallback' : 'first frame (this browser cannot play the video)';
    media.replaceChildren(img);
  }
  var probe = document.createElement('video'), playable = {};  // MIME type -> whether it may play
  function canPlay(type) {
    if (!(type in playable)) playable[type] = probe.canPlayType(type) !== '';
    return playable[type];
  }
  // A card shows its poster until hovered; its <video> is made then, from the template, and kept.
  Array.prototype.forEach.call(document.querySelectorAll('template.player'), function (t) {
    var media = t.parentNode, model = t.content.querySelector('video');
    var types = Array.prototype.map.call(model.querySelectorAll('source'), function (s) {
      return s.getAttribute('type');
    });
    if (!types.some(canPlay)) { fallback(media, model); return; }
    var v = null;
    function video() {
      if (v) return v;
      v = document.importNode(model, true);
      var sources = v.querySelectorAll('source');
      // a failed source hands over to the next one; the last one's error means none played
      sources[sources.length - 1].addEventListener('error', function () { fallback(media, v); });
      v.addEventListener('error', function () { fallback(media, v); });
      v.addEventListener('click', function () { if (v.paused) { v.play(); } else { v.pause(); } });
      media.replaceChildren(v);
      return v;
    }
    var card = media.closest('.card');
    card.addEventListener('mouseenter', function () { var p = video().play(); if (p) p.catch(function () {}); });
    card.addEventListener('mouseleave', function () { if (v) v.pause(); });
  });
})();
