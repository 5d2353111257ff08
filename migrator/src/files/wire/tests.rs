//! The wire format: every message round-trips, damaged frames are errors.

use super::*;

#[test]
fn ops_and_manifests_round_trip() {
    let meta = Meta {
        mode: 0o644,
        uid: 1000,
        gid: 100,
        mtime_s: -5,
        mtime_ns: 7,
    };
    let ops = vec![
        Op::RemoveTemp {
            path: b"x".to_vec(),
        },
        Op::Delete {
            path: b"a\xffb".to_vec(),
        },
        Op::Mkdir {
            path: b"d".to_vec(),
            meta,
        },
        Op::File {
            path: b"d/f".to_vec(),
            meta,
            data: Data::Inline(b"hello".to_vec()),
        },
        Op::Chunk {
            path: b"big".to_vec(),
            offset: 1 << 33,
            data: vec![1, 2, 3],
        },
        Op::File {
            path: b"big".to_vec(),
            meta,
            data: Data::Staged,
        },
        Op::Symlink {
            path: b"l".to_vec(),
            target: b"../t".to_vec(),
            meta,
        },
        Op::HardLink {
            path: b"h".to_vec(),
            leader: b"d/f".to_vec(),
        },
        Op::SetMeta {
            path: b"d".to_vec(),
            kind: Kind::Dir,
            meta,
        },
    ];
    let r = Request::Apply(ops);
    assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
    let r = Request::Resume {
        path: b"big \xff.bin".to_vec(),
        source: SourceId {
            ino: 7,
            size: 1 << 40,
            mtime: (-1, 999_999_999),
            ctime: (1_700_000_000, 5),
        },
    };
    assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
    let at = Response::ResumeAt(16 << 20);
    assert_eq!(decode_response(&encode_response(&at)).unwrap(), at);
    let m = Manifest {
        entries: vec![Entry {
            path: b"a b".to_vec(),
            kind: Kind::File,
            size: 3,
            mtime_s: 1,
            mtime_ns: 2,
            mode: 0o600,
            uid: 3,
            gid: 4,
            link_target: None,
            hardlink: Some(b"a b".to_vec()),
            blake3: Some([9; 32]),
        }],
        warnings: vec!["w".into()],
        temp_files: vec![b"t".to_vec()],
    };
    let resp = Response::Manifest(m);
    let back = decode_response(&encode_response(&resp)).unwrap();
    assert_eq!(format!("{back:?}"), format!("{resp:?}"));
}

#[test]
fn truncated_and_unknown_frames_are_errors_not_panics() {
    let full = encode_request(&Request::Apply(vec![Op::Delete {
        path: b"abc".to_vec(),
    }]));
    for n in 0..full.len() {
        assert!(decode_request(&full[..n]).is_err());
    }
    assert!(decode_request(&[99]).is_err());
    assert!(decode_response(&[0x85, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]).is_err());
}
