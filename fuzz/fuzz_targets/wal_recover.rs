//! WAL recovery: a segment file of arbitrary bytes read back frame by frame
//! as the agent does after a restart (`SegmentReader`), with and without
//! decoding rows. The first byte picks whether the rest is taken as is or
//! as frames whose length and CRC are fixed up (so the fuzzer reaches the
//! metadata JSON and the IPC payload behind a valid checksum).
#![no_main]
use driftwatch::sources::stream::wal::SegmentReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    driftwatch_fuzz::init();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        driftwatch_fuzz::fix_up_frames(rest)
    };
    let path = driftwatch_fuzz::scratch_file("segment.wal");
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    for decode in [false, true] {
        let Ok(mut reader) = SegmentReader::open(&path, decode) else {
            return;
        };
        let mut frames = 0;
        while let Ok(Some(frame)) = reader.next_frame() {
            frames += 1;
            let _ = frame.meta.rows;
        }
        assert!(
            reader.valid_len <= bytes.len() as u64,
            "valid_len past the end"
        );
        let _ = frames;
    }
});
