//! `GET /streams/{name}/thumbs.vtt`: a WebVTT thumbnail track (Video.js, JW Player, Shaka):
//! one cue per segment of the window, its text the segment's JPEG, `thumbs/{seq}.jpg`,
//! relative so it resolves next to `index.m3u8`.
//!
//! Invariants:
//! - The window is `index.m3u8`'s for the same query ([`hls::select`]): cue time 0 is the
//!   start of the first segment the playlist lists, and each cue starts at the sum of the
//!   durations of the listed segments before it (discontinuities included), as HLS players
//!   count their timeline. A segment without a cue still advances the clock, so the cues stay
//!   aligned. `Cache-Control` is the playlist's for the same window.
//! - Which segments get a cue: at the origin only those whose thumbnail exists (the stream's
//!   in-memory [`ThumbSet`](crate::store::ThumbSet), no file system access per request). At a
//!   relay, and for a stream served from the shared archive, every segment of a video period:
//!   neither knows which thumbnails the origin skipped (or, for the archive, failed to upload:
//!   that is best effort), so a cue's JPEG may answer `404 no-store`.
//! - The viewer's `?token=` is carried into every URI exactly as playlists carry it
//!   ([`UrlToken::apply`]: percent-encoded, so a cue text never holds a newline, `-->`, `&`
//!   or `<`).

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::gate::UrlToken;
use super::hls::{self, WindowQuery};
use super::{cache_control, ApiError, AppState, Feed, QueryParams, StreamName};

/// One cue: a segment's thumbnail, from `start_ms` for `duration_ms` on the playlist clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cue {
    pub seq: u64,
    pub start_ms: u64,
    pub duration_ms: u64,
}

/// Writes `ms` as a WebVTT timestamp `HH:MM:SS.mmm` (hours grow past two digits).
pub fn write_time(out: &mut String, ms: u64) {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let _ = write!(
        out,
        "{h:02}:{:02}:{:02}.{:03}",
        rest / 60_000,
        rest % 60_000 / 1000,
        rest % 1000
    );
}

/// The track: `WEBVTT`, then per cue a blank line, the timings and the thumbnail URI, with
/// `uri` applied to it (the viewer's token).
pub fn render(cues: &[Cue], uri: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(8 + cues.len() * 64);
    out.push_str("WEBVTT\n");
    for c in cues {
        out.push('\n');
        write_time(&mut out, c.start_ms);
        out.push_str(" --> ");
        write_time(&mut out, c.start_ms.saturating_add(c.duration_ms));
        out.push('\n');
        out.push_str(&uri(&format!("thumbs/{}.jpg", c.seq)));
        out.push('\n');
    }
    out
}

/// `GET /streams/{name}/thumbs.vtt`
pub async fn track(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    q: QueryParams,
    token: UrlToken,
) -> Result<Response, ApiError> {
    let feed = st.feed(&name).await?;
    let window = WindowQuery::of(&q)?;
    let (cues, past) = {
        let ix = feed.stream().read();
        let sel = hls::select(&ix, &window, st.playlist_window_ms, crate::time::now_ms())?;
        let listed = ix.segments.range(sel.range.clone());
        let made = match (&feed, ix.segments.get(sel.range.start)) {
            (Feed::Recorded(stream), Some(first)) => {
                let last = ix
                    .segments
                    .get(sel.range.end.saturating_sub(1))
                    .map_or(first.seq, |s| s.seq);
                Some(stream.thumbs().in_range(first.seq, last))
            }
            (Feed::Recorded(_), None) => Some(Default::default()),
            (Feed::Relayed(_) | Feed::Archived(..), _) => None,
        };
        let mut cues = Vec::with_capacity(sel.range.len());
        let mut at = 0u64;
        for s in listed {
            let wanted = match &made {
                Some(set) => set.contains(&s.seq),
                None => ix.period(s.period).is_some_and(|p| p.has_video()),
            };
            if wanted {
                cues.push(Cue {
                    seq: s.seq,
                    start_ms: at,
                    duration_ms: s.duration_ms,
                });
            }
            at = at.saturating_add(s.duration_ms);
        }
        (cues, sel.past)
    };
    let body = render(&cues, |uri| token.apply(uri));
    let content_type = HeaderValue::from_static("text/vtt; charset=utf-8");
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    cache_control(&mut r, hls::cache_control_of(past));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_a_day() {
        let mut s = String::new();
        write_time(&mut s, 0);
        s.push(' ');
        write_time(&mut s, 3_723_004);
        s.push(' ');
        write_time(&mut s, 100 * 3_600_000 + 59 * 60_000 + 59_999);
        s.push(' ');
        write_time(&mut s, u64::MAX);
        assert_eq!(
            s,
            "00:00:00.000 01:02:03.004 100:59:59.999 5124095576030:25:51.615"
        );
    }

    #[test]
    fn renders_cues() {
        let cues = [
            Cue {
                seq: 41,
                start_ms: 0,
                duration_ms: 2000,
            },
            Cue {
                seq: 43,
                start_ms: 4500,
                duration_ms: 1999,
            },
        ];
        assert_eq!(
            render(&cues, str::to_owned),
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nthumbs/41.jpg\n\n\
             00:00:04.500 --> 00:00:06.499\nthumbs/43.jpg\n"
        );
    }

    #[test]
    fn empty_window_is_a_valid_track() {
        assert_eq!(render(&[], str::to_owned), "WEBVTT\n");
    }

    #[test]
    fn tokens_are_escaped_into_cue_text() {
        let token = UrlToken(Some("a b&c<d>\n-->e.f".into()));
        let cue = Cue {
            seq: 1,
            start_ms: 0,
            duration_ms: 1000,
        };
        let text = render(&[cue], |u| token.apply(u));
        assert_eq!(
            text,
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n\
             thumbs/1.jpg?token=a%20b%26c%3Cd%3E%0A--%3Ee.f\n"
        );
        // One cue: exactly one timing line, the URI on the next.
        assert_eq!(text.matches("-->").count(), 1);
    }
}
