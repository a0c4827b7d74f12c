//! Tests of the write-ahead log on real files: torn tails are cut, damage is refused with its
//! file and offset, salvage keeps what precedes damage.
use super::*;

/// Opens the log and returns (payloads, offsets, recovery) or the error.
fn reopen(dir: &Path, from: u64, salvage: bool) -> Result<(Vec<Vec<u8>>, Vec<u64>, Recovery)> {
    let mut payloads = Vec::new();
    let mut offsets = Vec::new();
    let (_wal, recovery) = Wal::open(dir, from, true, salvage, |r| {
        payloads.push(r.payload.to_vec());
        offsets.push(r.offset);
        Ok(())
    })?;
    Ok((payloads, offsets, recovery))
}

fn record(i: usize) -> Vec<u8> {
    format!("record number {i:04} with some body").into_bytes()
}

/// Writes `n` records in one segment and returns its path.
async fn write(dir: &Path, n: usize) -> PathBuf {
    let (wal, _) = Wal::open(dir, 0, true, false, |_| Ok(())).unwrap();
    for i in 0..n {
        wal.append(record(i)).await.unwrap();
    }
    segments(dir).unwrap().last().unwrap().1.clone()
}

/// Deletes every segment but `path` (the fresh ones each open starts), so that `path` is the
/// last segment, as after a crash.
fn only(dir: &Path, path: &Path) {
    for (_, p) in segments(dir).unwrap() {
        if p != path {
            std::fs::remove_file(p).unwrap();
        }
    }
}

fn flip(path: &Path, at: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[at as usize] ^= 0x40;
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn records_survive_reopen_and_segments_rotate() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 3).await;
    let (wal, recovery) = Wal::open(dir.path(), 0, true, false, |_| Ok(())).unwrap();
    assert_eq!(recovery.records, 3);
    assert!(recovery.torn.is_none());
    let seg = wal.rotate().await.unwrap();
    wal.append(b"later".to_vec()).await.unwrap();
    assert!(wal.bytes_since(seg) > 0 && wal.bytes_since(seg) < wal.bytes());
    wal.remove_before(seg).unwrap();
    drop(wal);
    let (payloads, _, _) = reopen(dir.path(), seg, false).unwrap();
    assert_eq!(payloads, vec![b"later".to_vec()]);
}

#[tokio::test]
async fn a_truncated_last_record_is_a_torn_tail_cut_with_nothing_acknowledged_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), 5).await;
    let (_, offsets, _) = reopen(dir.path(), 0, false).unwrap();
    // The earlier open started a fresh (empty) segment; the records are in `path`.
    let full = std::fs::metadata(&path).unwrap().len();
    let last = offsets[4];
    // A crash in the middle of appending record 4: only part of it reached the file.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(last + 7).unwrap();
    drop(f);
    only(dir.path(), &path);
    let (payloads, _, recovery) = reopen(dir.path(), 0, false).unwrap();
    assert_eq!(payloads, (0..4).map(record).collect::<Vec<_>>());
    let (torn_path, offset, bytes) = recovery.torn.expect("the torn tail is reported");
    assert_eq!((torn_path, offset, bytes), (path.clone(), last, 7));
    assert!(std::fs::metadata(&path).unwrap().len() < full);
    // Once cut, the segment reads cleanly.
    assert_eq!(reopen(dir.path(), 0, false).unwrap().0.len(), 4);
}

#[tokio::test]
async fn a_zero_filled_end_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), 3).await;
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0; 700]).unwrap();
    drop(f);
    only(dir.path(), &path);
    let (payloads, _, recovery) = reopen(dir.path(), 0, false).unwrap();
    assert_eq!(payloads.len(), 3);
    assert_eq!(recovery.torn.map(|t| t.2), Some(700));
}

#[tokio::test]
async fn a_flipped_byte_mid_segment_is_refused_naming_file_and_offset_and_salvage_keeps_what_precedes()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), 50).await;
    let (_, offsets, _) = reopen(dir.path(), 0, false).unwrap();
    only(dir.path(), &path);
    flip(&path, offsets[25] + HEADER as u64 + 3);
    let err = reopen(dir.path(), 0, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::CorruptWal { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("byte {}", offsets[25])), "{msg}");
    assert!(msg.contains("checksum"), "{msg}");
    // Refused twice: nothing was repaired by the first attempt.
    assert!(reopen(dir.path(), 0, false).is_err());

    let (payloads, _, recovery) = reopen(dir.path(), 0, true).unwrap();
    assert_eq!(payloads, (0..25).map(record).collect::<Vec<_>>());
    let s = recovery.salvaged.expect("the salvage is reported");
    assert_eq!((s.path.clone(), s.offset), (path.clone(), offsets[25]));
    assert!(s.dropped_bytes > 0);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
        .collect();
    assert!(!aside.is_empty(), "the dropped bytes are kept aside");
    // After the salvage the log opens cleanly with what it kept.
    assert_eq!(reopen(dir.path(), 0, false).unwrap().0.len(), 25);
}

#[tokio::test]
async fn a_flipped_length_field_is_damage_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), 20).await;
    let (_, offsets, _) = reopen(dir.path(), 0, false).unwrap();
    only(dir.path(), &path);
    // The high byte of record 10's length: it now points far past the end of the file, which
    // without the header checksum would read as a record cut short.
    flip(&path, offsets[10] + 3);
    let msg = reopen(dir.path(), 0, false).unwrap_err().to_string();
    assert!(msg.contains("header fails its checksum"), "{msg}");
    assert!(msg.contains(&format!("byte {}", offsets[10])), "{msg}");
    let (payloads, _, _) = reopen(dir.path(), 0, true).unwrap();
    assert_eq!(payloads.len(), 10);
}

#[tokio::test]
async fn damage_in_a_segment_before_the_last_is_refused_even_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), 4).await;
    let (wal, _) = Wal::open(dir.path(), 0, true, false, |_| Ok(())).unwrap();
    wal.append(b"in the next segment".to_vec()).await.unwrap();
    drop(wal);
    let (_, offsets, _) = reopen(dir.path(), 0, false).unwrap();
    // Cut the first segment inside its last record: in a sealed segment that is damage.
    let f = OpenOptions::new().write(true).open(&first).unwrap();
    f.set_len(offsets[3] + 5).unwrap();
    drop(f);
    let msg = reopen(dir.path(), 0, false).unwrap_err().to_string();
    assert!(msg.contains("before the last"), "{msg}");
    assert!(msg.contains(&first.display().to_string()), "{msg}");
}

#[tokio::test]
async fn salvaged_damage_sets_later_segments_aside() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), 6).await;
    let (wal, _) = Wal::open(dir.path(), 0, true, false, |_| Ok(())).unwrap();
    wal.append(b"in the next segment".to_vec()).await.unwrap();
    drop(wal);
    let (_, offsets, _) = reopen(dir.path(), 0, false).unwrap();
    flip(&first, offsets[2] + HEADER as u64);
    let (payloads, _, recovery) = reopen(dir.path(), 0, true).unwrap();
    assert_eq!(payloads.len(), 2);
    let s = recovery.salvaged.expect("reported");
    assert!(s.dropped_segments >= 1, "{s:?}");
}

#[tokio::test]
async fn a_missing_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 2).await;
    reopen(dir.path(), 0, false).unwrap();
    reopen(dir.path(), 0, false).unwrap();
    let segs = segments(dir.path()).unwrap();
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1].1).unwrap();
    let msg = reopen(dir.path(), 0, false).unwrap_err().to_string();
    assert!(msg.contains("missing"), "{msg}");
}

#[tokio::test]
async fn segments_written_before_the_magic_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Vec::new();
    for i in 0..3 {
        let p = record(i);
        old.extend_from_slice(&(p.len() as u32).to_le_bytes());
        old.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        old.extend_from_slice(&p);
    }
    std::fs::write(segment_path(dir.path(), 0), &old).unwrap();
    let (payloads, _, _) = reopen(dir.path(), 0, false).unwrap();
    assert_eq!(payloads, (0..3).map(record).collect::<Vec<_>>());
}

#[tokio::test]
async fn replay_errors_stop_the_open() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 2).await;
    let err = Wal::open(dir.path(), 0, true, false, |r| {
        Err(StoreError::invalid(format!("bad record at {}", r.offset)))
    })
    .unwrap_err();
    assert!(err.to_string().contains("bad record at 8"), "{err}");
}
