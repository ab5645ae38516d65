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
  // webp/gif, else its poster, else say so.
  function fallback(v) {
    var f = v.getAttribute('data-fallback'), src = f || v.getAttribute('poster');
    if (!src) {
      var p = document.createElement('div');
      p.className = 'placeholder';
      p.textContent = 'this browser cannot play the video';
      v.replaceWith(p);
      return;
    }
    var img = document.createElement('img');
    img.src = src;
    img.alt = f ? 'animated fallback' : 'first frame (this browser cannot play the video)';
    v.replaceWith(img);
  }
  Array.prototype.forEach.call(document.querySelectorAll('video'), function (v) {
    var sources = v.querySelectorAll('source');
    var playable = Array.prototype.some.call(sources, function (s) {
      return v.canPlayType(s.getAttribute('type')) !== '';
    });
    if (!playable) { fallback(v); return; }
    // a failed source hands over to the next one; the last one's error means none played
    sources[sources.length - 1].addEventListener('error', function () { fallback(v); });
    v.addEventListener('error', function () { fallback(v); });
    var card = v.closest('.card');
    card.addEventListener('mouseenter', function () { var p = v.play(); if (p) p.catch(function () {}); });
    card.addEventListener('mouseleave', function () { v.pause(); });
    v.addEventListener('click', function () { if (v.paused) { v.play(); } else { v.pause(); } });
  });
})();
