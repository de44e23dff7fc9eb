/** Thumbnail loader for scrubbing: `thumbs/{seq}.jpg` of a stream (relative to
 * `/streams/{name}/`, with the page's `?token=`).
 *
 * Invariants: at most `max` images are kept (LRU by last use); a seq is requested at most once
 * while cached or pending; a seq that failed (e.g. 404 before the server has thumbnails) is not
 * asked again for `retryMs`, and the failure list is bounded too. No timers. */

export class ThumbLoader {
  /** `urlOf(seq)` gives the (tokenized) URL of a thumbnail. */
  constructor(urlOf, { max = 40, retryMs = 60000, now = () => Date.now(), makeImage = () => new Image() } = {}) {
    this.urlOf = urlOf;
    this.max = max;
    this.retryMs = retryMs;
    this.now = now;
    this.makeImage = makeImage;
    this.cache = new Map(); // seq -> {img, ok: bool|null}; Map order = LRU order
    this.failed = new Map(); // seq -> time of the failure
  }

  /** The loaded image of `seq`, or null (starts loading it unless it failed recently). */
  get(seq) {
    const e = this.touch(seq);
    return e && e.ok ? e.img : null;
  }

  /** Starts loading `seqs` (the few around the pointer) without waiting. */
  preload(seqs) {
    for (const s of seqs) this.touch(s);
  }

  touch(seq) {
    let e = this.cache.get(seq);
    if (e) {
      this.cache.delete(seq);
      this.cache.set(seq, e);
      return e;
    }
    const at = this.failed.get(seq);
    if (at != null && this.now() - at < this.retryMs) return null;
    this.failed.delete(seq);
    const img = this.makeImage();
    e = { img, ok: null };
    img.onload = () => { e.ok = true; if (this.onload) this.onload(seq); };
    img.onerror = () => {
      e.ok = false;
      this.cache.delete(seq);
      this.failed.set(seq, this.now());
      while (this.failed.size > 4 * this.max) this.failed.delete(this.failed.keys().next().value);
    };
    img.src = this.urlOf(seq);
    this.cache.set(seq, e);
    while (this.cache.size > this.max) this.cache.delete(this.cache.keys().next().value);
    return e;
  }
}
