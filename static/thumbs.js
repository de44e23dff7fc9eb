/** Thumbnail loader for scrubbing: `thumbs/{seq}.jpg` of a stream (relative to
 * `/streams/{name}/`, with the page's `?token=`).
 *
 * Invariants:
 * - At most `concurrency` images load at once, and a new one starts at most every `gapMs`;
 *   what waits is the pointer's latest segment and the neighbours preloaded for it (`queue`
 *   entries); a miss for a new segment drops older wishes. So a drag across 24 hours asks for
 *   about ten thumbnails a second (the one under the pointer when a slot frees), not one per
 *   mouse move, and nothing stale once the pointer stops.
 * - At most `max` loaded images are kept (LRU by last use); a seq is requested at most once
 *   while cached or loading.
 * - A seq that failed (404: not made yet, skipped, audio-only) is not asked again for
 *   `retryMs`; that list is bounded too. At most one timer is pending (the next start). */

export class ThumbLoader {
  /** `urlOf(seq)` gives the (tokenized) URL of a thumbnail. */
  constructor(urlOf, { max = 40, retryMs = 60000, concurrency = 3, queue = 4, gapMs = 90,
    now = () => Date.now(), makeImage = () => new Image(), setTimer = (fn, ms) => setTimeout(fn, ms) } = {}) {
    this.urlOf = urlOf;
    this.max = max;
    this.retryMs = retryMs;
    this.concurrency = concurrency;
    this.queueMax = queue;
    this.now = now;
    this.makeImage = makeImage;
    this.gapMs = gapMs;
    this.setTimer = setTimer;
    this.lastStart = -Infinity;
    this.timer = false;
    this.cache = new Map(); // seq -> {img, ok: true}; Map order = LRU order
    this.loading = new Map(); // seq -> img
    this.queue = []; // seqs waiting, newest first
    this.failed = new Map(); // seq -> time of the failure
    this.requests = 0; // images asked of the server so far
    this.onload = null; // (seq, img) when a thumbnail has loaded
  }

  /** The loaded image of `seq`, or null; a miss is queued first in line. */
  get(seq) {
    const e = this.cache.get(seq);
    if (e) {
      this.cache.delete(seq);
      this.cache.set(seq, e);
      return e.img;
    }
    this.queue.length = 0; // the pointer moved on: what it wanted before is stale
    this.wish(seq, true);
    this.pump();
    return null;
  }

  /** Queues `seqs` (around the pointer) behind what the pointer is on; never waits. */
  preload(seqs) {
    for (const s of seqs) this.wish(s, false);
    this.pump();
  }

  wish(seq, first) {
    if (this.cache.has(seq) || this.loading.has(seq)) return;
    const at = this.failed.get(seq);
    if (at != null && this.now() - at < this.retryMs) return;
    this.failed.delete(seq);
    const i = this.queue.indexOf(seq);
    if (i >= 0) this.queue.splice(i, 1);
    if (first) this.queue.unshift(seq);
    else this.queue.splice(Math.min(1, this.queue.length), 0, seq);
    if (this.queue.length > this.queueMax) this.queue.length = this.queueMax;
  }

  pump() {
    while (this.loading.size < this.concurrency && this.queue.length) {
      const wait = this.lastStart + this.gapMs - this.now();
      if (wait > 0) {
        if (!this.timer) {
          this.timer = true;
          this.setTimer(() => { this.timer = false; this.pump(); }, wait);
        }
        return;
      }
      this.lastStart = this.now();
      this.start(this.queue.shift());
    }
  }

  start(seq) {
    const img = this.makeImage();
    this.loading.set(seq, img);
    this.requests++;
    img.onload = () => {
      this.loading.delete(seq);
      this.cache.set(seq, { img, ok: true });
      while (this.cache.size > this.max) this.cache.delete(this.cache.keys().next().value);
      if (this.onload) this.onload(seq, img);
      this.pump();
    };
    img.onerror = () => {
      this.loading.delete(seq);
      this.failed.set(seq, this.now());
      while (this.failed.size > 4 * this.max) this.failed.delete(this.failed.keys().next().value);
      this.pump();
    };
    img.src = this.urlOf(seq);
  }
}
