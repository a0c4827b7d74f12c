//! Tests of the shard state: the change log against a brute-force model.
use super::*;
use rand::{Rng, SeedableRng};

/// Pulls "since v" answered from the change log (with compactions and dense resets) equal a
/// brute-force scan of each entry's last change — by anyone, or by anyone but one worker.
#[test]
fn changed_since_matches_brute_force() {
    let layout = JobLayout::new("j", vec![("w".into(), vec![1000])], "asp", 3, 100).unwrap();
    let job = JobState::new(
        layout,
        &[],
        JobMeta::default(),
        &ShardState::new(0, 1, 4, 0),
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Per entry, the version of each worker's last change.
    let mut last_change = vec![[0u64; 3]; 1000];
    let mut versions = vec![0u64];
    for seq in 0..300u64 {
        let update = if seq % 50 == 49 {
            let start = rng.random_range(0..900u64);
            crate::client::dense("w", start, vec![1.0; 100])
        } else {
            let mut idx: Vec<u64> = (0..rng.random_range(1..40))
                .map(|_| rng.random_range(0..1000))
                .collect();
            idx.sort_unstable();
            crate::client::sparse("w", idx.clone(), vec![1.0; idx.len()])
        };
        let worker = (seq % 3) as u32;
        let req = pb::PushRequest {
            job_id: "j".into(),
            worker,
            clock: 0,
            seq,
            updates: vec![update.clone().into()],
        };
        let valid = job.validate_push(&req, false).unwrap();
        let v = job.apply_push(&valid);
        let w = worker as usize;
        match update.dense_start {
            Some(s) => last_change[s as usize..s as usize + 100]
                .iter_mut()
                .for_each(|l| l[w] = v),
            None => update
                .indices
                .iter()
                .for_each(|&i| last_change[i as usize][w] = v),
        }
        versions.push(v);
    }
    for &since in versions.iter().step_by(7) {
        for except in [None, Some(0u32)] {
            let mut got: Vec<u64> = Vec::new();
            for c in job
                .pull(&[], Some(since), except, ValueEncoding::F32)
                .unwrap()
            {
                if c.offsets.is_empty() {
                    got.extend(c.start..c.start + c.values.len() as u64 / 4);
                } else {
                    let offsets = crate::chunk::decode_offsets(&c.offsets, "o").unwrap();
                    got.extend(offsets.into_iter().map(|o| c.start + u64::from(o)));
                }
            }
            got.sort_unstable();
            got.dedup();
            let want: Vec<u64> = (0..1000)
                .filter(|&i| {
                    (0..3u32)
                        .filter(|&w| Some(w) != except)
                        .any(|w| last_change[i as usize][w as usize] > since)
                })
                .collect();
            assert!(
                want.iter().all(|i| got.binary_search(i).is_ok()),
                "since {since} except {except:?}: entries missing"
            );
            if since + 3 >= *versions.last().unwrap() {
                assert_eq!(
                    got, want,
                    "a recent since is answered exactly, from the log (except {except:?})"
                );
            }
        }
    }
}
