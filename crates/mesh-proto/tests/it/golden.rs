//! The golden examples under `fixtures/golden/` are the contract: each decodes on its topic, re-encodes to the same
//! JSON, every kind has one, and `docs/protocol.md` shows each one verbatim, so the documentation cannot drift.

use std::path::PathBuf;

use mesh_proto::records::Record;
use mesh_proto::{decode, encode};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden() -> Vec<(String, String)> {
    let dir = repo().join("fixtures/golden");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let kind = path.file_stem().expect("file name").to_string_lossy().into_owned();
            (kind, std::fs::read_to_string(&path).expect("golden file"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_kind_has_a_golden_example_that_round_trips() {
    let examples = golden();
    let kinds: Vec<&str> = examples.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected: Vec<&str> = Record::KINDS.to_vec();
    expected.sort_unstable();
    assert_eq!(kinds, expected, "one golden file per kind");
    for (kind, text) in &examples {
        let topic = Record::allowed_on(kind)[0];
        let envelope = decode(Some(text.as_bytes()), Some(topic)).unwrap_or_else(|e| panic!("{kind}.json: {e}"));
        assert_eq!(envelope.record.kind(), kind);
        let again: serde_json::Value = serde_json::from_slice(&encode(&envelope)).expect("json");
        let original: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(again, original, "{kind}.json re-encodes to the same JSON");
    }
}

#[test]
fn protocol_doc_shows_every_golden_example() {
    let doc = std::fs::read_to_string(repo().join("docs/protocol.md")).expect("docs/protocol.md");
    for (kind, text) in golden() {
        assert!(doc.contains(text.trim_end()), "docs/protocol.md lacks the golden example of {kind:?}, verbatim");
    }
}
