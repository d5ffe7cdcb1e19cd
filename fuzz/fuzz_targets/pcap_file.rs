//! The capture-file reader on arbitrary files: it must never panic or allocate without
//! bound, a scan and a read must agree on the packets and on whether the file is corrupt,
//! and every delivered packet must be one the parser may be handed.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use probe::pcap::FileSource;
use probe::{BurstStatus, PacketSource};

/// Larger than any record the reader accepts (libpcap's maximum snap length).
const MAX_CAPTURED_LEN: usize = 262_144;

/// The file each input is written to (the reader takes a path): in
/// `TAPFLOW_FUZZ_SCRATCH` (scripts/fuzz.sh points it at its run directory and removes
/// it), else in /dev/shm or the temporary directory.
fn scratch_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = match std::env::var_os("TAPFLOW_FUZZ_SCRATCH") {
            Some(dir) => PathBuf::from(dir),
            None if std::path::Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        dir.join(format!("tapflow-fuzz-pcap-{}.pcap", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_file();
    std::fs::write(path, data).unwrap();
    let scanned = FileSource::scan(path);
    let mut source = match FileSource::open(path, 3) {
        Ok(source) => source,
        Err(_) => {
            assert!(scanned.is_err(), "scan accepted what open refused");
            return;
        }
    };
    let mut delivered = 0u64;
    let mut wire_bytes = 0u64;
    let mut failed = false;
    // Every poll consumes at least one record or ends, so the file's size bounds the loop.
    for _ in 0..=data.len() {
        let status = source.poll_burst(&mut |burst| {
            for packet in burst {
                assert!(packet.data.len() <= MAX_CAPTURED_LEN);
                assert!(packet.wire_len as usize >= packet.data.len());
                assert_eq!(packet.port, 3);
                delivered += 1;
                wire_bytes += u64::from(packet.wire_len);
                let _ = probe::parse::parse_frame_with_wire_len(packet.data, packet.wire_len);
            }
        });
        match status {
            Ok(BurstStatus::Delivered(n)) => assert!(n > 0, "a file source delivered nothing"),
            Ok(BurstStatus::Ended) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    match scanned {
        Ok(stats) => {
            assert!(!failed, "read failed where the scan did not");
            assert_eq!(stats.packets, delivered);
            assert_eq!(stats.wire_bytes, wire_bytes);
        }
        Err(_) => assert!(failed, "scan failed where the read did not"),
    }
});
