//! MP4 checks of what a node serves, decoded with mp4-atom.

/// Decodes an init segment with mp4-atom: `ftyp` then `moov`, nothing else.
pub fn decode_init(init: &[u8]) -> (mp4_atom::Ftyp, mp4_atom::Moov) {
    use mp4_atom::Decode;
    let mut buf = init;
    let ftyp = mp4_atom::Ftyp::decode(&mut buf).expect("ftyp");
    let moov = mp4_atom::Moov::decode(&mut buf).expect("moov");
    assert!(buf.is_empty(), "init = ftyp + moov");
    (ftyp, moov)
}

/// Decodes a media segment with mp4-atom: `moof` + `mdat` pairs, nothing else (a segment
/// written in LL-HLS parts has one pair per part). Returns the first `moof` with the later
/// ones' `trun`s appended to its track fragments, so callers see the whole segment's samples.
pub fn decode_segment(seg: &[u8]) -> mp4_atom::Moof {
    use mp4_atom::Decode;
    let mut buf = seg;
    let mut first: Option<mp4_atom::Moof> = None;
    while !buf.is_empty() {
        let moof = mp4_atom::Moof::decode(&mut buf).expect("moof");
        let mp4_atom::Any::Mdat(_) = mp4_atom::Any::decode(&mut buf).expect("mdat") else {
            panic!("segment = moof + mdat pairs");
        };
        match &mut first {
            None => first = Some(moof),
            Some(f) => {
                for traf in moof.traf {
                    match f
                        .traf
                        .iter_mut()
                        .find(|t| t.tfhd.track_id == traf.tfhd.track_id)
                    {
                        Some(t) => t.trun.extend(traf.trun),
                        None => f.traf.push(traf),
                    }
                }
            }
        }
    }
    first.expect("segment has a moof")
}

/// Sample durations of a track fragment: per sample, else the `tfhd` default.
pub fn sample_durations(traf: &mp4_atom::Traf) -> Vec<u32> {
    traf.trun
        .iter()
        .flat_map(|t| t.samples.iter())
        .map(|e| {
            e.duration
                .or(traf.tfhd.default_sample_duration)
                .expect("sample duration")
        })
        .collect()
}

/// Whether the first sample of a track fragment is a sync sample (its flags: first-sample or
/// per-sample flags, else the `tfhd` default).
pub fn starts_with_sync(traf: &mp4_atom::Traf) -> bool {
    let first = traf.trun.first().and_then(|t| t.samples.iter().next());
    let flags = first
        .and_then(|e| e.flags)
        .or(traf.tfhd.default_sample_flags)
        .unwrap_or(0);
    flags & 0x0001_0000 == 0
}

/// Whether a track fragment carries composition offsets.
pub fn has_cts(traf: &mp4_atom::Traf) -> bool {
    traf.trun
        .iter()
        .any(|t| t.samples.iter().any(|e| e.cts.is_some()))
}
