/** The stream overview at `/` (no `?stream=`): one card per stream the viewer may read, with its
 * newest thumbnail, state and DVR length; a card opens the player on that stream.
 *
 * Invariants: cards are keyed by stream name and updated in place (no flicker on refresh); a
 * thumbnail is swapped only once the newer one has loaded, and a missing one (not made yet,
 * audio-only, an older node) falls back to the previous segment's once, then to a placeholder. */

import { enc, withToken, TOKEN } from './net.js';
import { fmtClock, fmtDay, fmtDuration, fmtBytes } from './time.js';

/** One line describing a stream's state: "Live · DVR 1 h 02 min" or "Ended 14:05 · DVR 3 min". */
export function cardSummary(st) {
  const dvr = (st && st.dvr) || {};
  const parts = [];
  if (st.live) parts.push('Live');
  else {
    const end = Date.parse(dvr.end || '');
    parts.push(Number.isFinite(end) ? `Ended ${fmtDay(end) ? `${fmtDay(end)} ` : ''}${fmtClock(end)}` : 'Ended');
  }
  if (dvr.duration_ms) parts.push(`DVR ${fmtDuration(dvr.duration_ms)}`);
  if (dvr.bytes) parts.push(fmtBytes(dvr.bytes));
  return parts.join(' · ');
}

/** Where a stream comes from, for the card's second line. */
export function cardSource(st) {
  const src = (st && st.source) || {};
  const size = st.width && st.height ? `${st.width}×${st.height}` : '';
  let from = '';
  if (src.kind === 'proxy') from = `relayed from ${src.upstream || 'upstream'}`;
  else if (src.kind === 'archive') from = 'from the archive';
  else if (src.kind === 'ingest') from = 'recorded here';
  return [size, from].filter(Boolean).join(' · ');
}

export class Home {
  constructor(root, list, empty) {
    this.root = root;
    this.list = list;
    this.empty = empty;
    this.cards = new Map(); // name -> {li, img, title, summary, source, badge, seq}
  }

  show(on) {
    this.root.hidden = !on;
  }

  /** Renders `streams` (the `/streams` answer). */
  render(streams) {
    const names = new Set(streams.map((s) => s.name));
    for (const [name, c] of this.cards) if (!names.has(name)) { c.li.remove(); this.cards.delete(name); }
    streams.forEach((st, i) => {
      let c = this.cards.get(st.name);
      if (!c) { c = this.card(st.name); this.cards.set(st.name, c); }
      if (this.list.children[i] !== c.li) this.list.insertBefore(c.li, this.list.children[i] || null);
      c.badge.textContent = st.live ? 'LIVE' : 'ENDED';
      c.badge.className = `badge ${st.live ? 'on' : 'off'}`;
      c.summary.textContent = cardSummary(st);
      c.source.textContent = cardSource(st);
      const last = st.dvr && st.dvr.last_seq;
      if (Number.isInteger(last) && last !== c.seq) { c.seq = last; this.thumb(c, st.name, last, 1); }
      else if (!Number.isInteger(last)) c.img.parentNode.classList.add('none');
    });
    this.empty.hidden = streams.length > 0;
  }

  card(name) {
    const li = document.createElement('li');
    const a = document.createElement('a');
    const q = new URLSearchParams({ stream: name });
    if (TOKEN) q.set('token', TOKEN);
    a.href = `?${q}`;
    a.className = 'card';
    const pic = document.createElement('div');
    pic.className = 'pic none';
    const img = document.createElement('img');
    img.alt = '';
    img.loading = 'lazy';
    const badge = document.createElement('span');
    pic.append(img, badge);
    const title = document.createElement('span');
    title.className = 'card-name';
    title.textContent = name;
    const summary = document.createElement('span');
    summary.className = 'card-summary';
    const source = document.createElement('span');
    source.className = 'card-source';
    a.append(pic, title, summary, source);
    a.setAttribute('aria-label', `Watch ${name}`);
    li.append(a);
    return { li, img, title, summary, source, badge, seq: null };
  }

  /** Loads thumbnail `seq` off-screen and shows it once loaded; `tries` older ones on a miss. */
  thumb(c, name, seq, tries) {
    const im = new Image();
    im.onload = () => {
      if (c.seq !== seq && c.seq !== seq + 1) return; // a newer one was asked for meanwhile
      c.img.src = im.src;
      c.img.parentNode.classList.remove('none');
    };
    im.onerror = () => { if (tries > 0 && seq > 0) this.thumb(c, name, seq - 1, tries - 1); };
    im.src = withToken(`streams/${enc(name)}/thumbs/${seq}.jpg`);
  }
}
