//! On-device learning with the bundled model over the demo's real sample texts (www/samples.json).
#![cfg(feature = "bundled-model")]

use feedloop_core::{
    Candidate, FeedbackLoop, FeedbackWeights, LearningConfig, PersonalState, RawFeedback,
    RewardModel,
};
use serde::Deserialize;

const NOW: f64 = 1_800_000_000_000.0;

#[derive(Deserialize)]
struct Sample {
    id: String,
    question: String,
    candidates: Vec<String>,
}

fn samples() -> Vec<Sample> {
    serde_json::from_str(include_str!("../../www/samples.json")).unwrap()
}

fn new_loop(seed: u64) -> FeedbackLoop {
    let config = LearningConfig {
        seed,
        ..LearningConfig::default()
    };
    FeedbackLoop::new(
        RewardModel::bundled().unwrap(),
        FeedbackWeights::default(),
        config,
        seed,
    )
    .unwrap()
}

fn id(sample: &Sample, j: usize) -> String {
    format!("{}/{j}", sample.id)
}

/// Ranks one sample; its candidates as `RankedCandidate`s, best first.
fn rank_sample(fl: &mut FeedbackLoop, s: &Sample) -> Vec<feedloop_core::RankedCandidate> {
    let ids: Vec<String> = (0..s.candidates.len()).map(|j| id(s, j)).collect();
    let candidates: Vec<Candidate> = ids
        .iter()
        .zip(&s.candidates)
        .map(|(id, text)| Candidate { id, text })
        .collect();
    fl.rank(&s.question, &candidates).unwrap()
}

/// Ranks every sample; the candidate ids of each, best first.
fn rank_all(fl: &mut FeedbackLoop, samples: &[Sample]) -> Vec<Vec<String>> {
    samples
        .iter()
        .map(|s| rank_sample(fl, s).into_iter().map(|r| r.id).collect())
        .collect()
}

fn event(kind: &str) -> RawFeedback {
    RawFeedback {
        kind: Some(kind.into()),
        ..Default::default()
    }
}

#[test]
fn a_thumbs_down_on_the_top_answer_moves_it_down_for_every_sample() {
    let samples = samples();
    for (i, sample) in samples.iter().enumerate() {
        let mut fl = new_loop(1);
        let before = &rank_all(&mut fl, &samples)[i];
        let top = before[0].clone();
        let outcome = fl
            .record(
                RawFeedback {
                    candidate: Some(top.clone()),
                    up: Some(false),
                    ..event("thumbs")
                },
                NOW,
            )
            .unwrap();
        assert!(outcome.learned);
        assert!(outcome.score_after < outcome.score_before);
        let after = &rank_all(&mut fl, &samples)[i];
        let position = after.iter().position(|c| *c == top).unwrap();
        assert!(
            position > 0,
            "{}: the thumbed-down top answer stayed on top",
            sample.id
        );
    }
}

/// A unit vector from a seeded generator (test-only randomness).
fn direction(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let v: Vec<f32> = (0..dimensions)
        .map(|_| {
            // Box–Muller: a Gaussian, so the direction is uniform on the sphere.
            let (u1, u2) = (rng.f64().max(1e-12), rng.f64());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// Simulated users whose hidden preference is a fixed direction u in embedding space (utility of an
/// answer = u · e_answer, u uniform on the sphere) choose between shown pairs (Bradley–Terry with a
/// little noise). Accuracy is measured on held-out pairs: all of them, and the half on which the user
/// has a clear preference (|Δutility| at or above the median over all pairs).
///
/// Twenty comparisons carry twenty bits, and for a random 64-D direction that caps what any learner
/// can reach on *all* held-out pairs: a batch logistic fit to convergence on the same comparisons (the
/// `ideal` column) gets about 0.72. So the test asks: chance before any feedback; ≥ 0.8 on the clear
/// pairs after 20 choices; and on all pairs, at least 95 % of the batch fit's accuracy.
#[test]
fn simulated_users_teach_their_hidden_preference_within_twenty_choices() {
    const USERS: u64 = 32;
    const EVENTS: usize = 20;
    const SHARPNESS: f64 = 40.0; // BT scale on utility differences: mostly, not always, consistent
    let samples = samples();
    let model = RewardModel::bundled().unwrap();
    let texts: Vec<&str> = samples
        .iter()
        .flat_map(|s| s.candidates.iter().map(String::as_str))
        .collect();
    let embeddings = model.embed(&texts).unwrap();
    let ids: Vec<String> = samples
        .iter()
        .flat_map(|s| (0..s.candidates.len()).map(move |j| id(s, j)))
        .collect();
    // Every within-question pair, by flat index.
    let mut pairs = Vec::new();
    let mut offset = 0;
    for s in &samples {
        for a in 0..s.candidates.len() {
            for b in a + 1..s.candidates.len() {
                pairs.push((offset + a, offset + b));
            }
        }
        offset += s.candidates.len();
    }

    let mut curve_all = [0.0f64; EVENTS + 1];
    let mut curve_clear = [0.0f64; EVENTS + 1];
    let mut ideal_all = 0.0;
    for user in 0..USERS {
        let u = direction(1000 + user, embeddings.dimensions);
        let utility: Vec<f32> = (0..texts.len())
            .map(|i| u.iter().zip(embeddings.row(i)).map(|(a, b)| a * b).sum())
            .collect();
        let gap = |(a, b): (usize, usize)| (utility[a] - utility[b]).abs();
        let mut gaps: Vec<f32> = pairs.iter().map(|p| gap(*p)).collect();
        gaps.sort_by(f32::total_cmp);
        let median_gap = gaps[gaps.len() / 2];
        let mut rng = fastrand::Rng::with_seed(user);
        let mut shuffled = pairs.clone();
        rng.shuffle(&mut shuffled);
        let (train, held_out) = shuffled.split_at(shuffled.len() / 2);
        let clear: Vec<(usize, usize)> = held_out
            .iter()
            .copied()
            .filter(|p| gap(*p) >= median_gap)
            .collect();

        let accuracy = |fl: &mut FeedbackLoop, pairs: &[(usize, usize)]| {
            let scores: std::collections::HashMap<String, f32> = samples
                .iter()
                .flat_map(|s| rank_sample(fl, s).into_iter().map(|r| (r.id, r.score)))
                .collect();
            let correct = pairs
                .iter()
                .filter(|(a, b)| {
                    (scores[&ids[*a]] > scores[&ids[*b]]) == (utility[*a] > utility[*b])
                })
                .count();
            correct as f64 / pairs.len() as f64
        };
        let mut fl = new_loop(user);
        rank_all(&mut fl, &samples);
        curve_all[0] += accuracy(&mut fl, held_out);
        curve_clear[0] += accuracy(&mut fl, &clear);
        let mut choices = Vec::new();
        for (k, (a, b)) in train.iter().take(EVENTS).enumerate() {
            let p_a = 1.0 / (1.0 + (-SHARPNESS * f64::from(utility[*a] - utility[*b])).exp());
            let (winner, loser) = if rng.f64() < p_a { (a, b) } else { (b, a) };
            let choice = RawFeedback {
                winner: Some(ids[*winner].clone()),
                loser: Some(ids[*loser].clone()),
                ..event("pairwise")
            };
            choices.push(choice.clone());
            fl.record(choice, NOW).unwrap();
            curve_all[k + 1] += accuracy(&mut fl, held_out);
            curve_clear[k + 1] += accuracy(&mut fl, &clear);
        }
        // The batch reference: the same choices, learned over and over until the fit converges.
        let config = LearningConfig {
            replay_steps: 0,
            ..LearningConfig::default()
        };
        let weights = FeedbackWeights {
            max_events_per_candidate: u32::MAX,
            ..FeedbackWeights::default()
        };
        let mut batch =
            FeedbackLoop::new(RewardModel::bundled().unwrap(), weights, config, 0).unwrap();
        rank_all(&mut batch, &samples);
        for _ in 0..100 {
            for choice in &choices {
                batch.record(choice.clone(), NOW).unwrap();
            }
        }
        ideal_all += accuracy(&mut batch, held_out);
    }
    let n = USERS as f64;
    let ideal = ideal_all / n;
    println!("held-out pairwise accuracy after k choices (mean of {USERS} simulated users):");
    println!("   k   all pairs   clear preference");
    for k in 0..=EVENTS {
        println!(
            "  {k:2}     {:.3}       {:.3}",
            curve_all[k] / n,
            curve_clear[k] / n
        );
    }
    println!("  batch fit on the same {EVENTS} choices: {ideal:.3} (all pairs)");
    let start = curve_all[0] / n;
    let (end_all, end_clear) = (curve_all[EVENTS] / n, curve_clear[EVENTS] / n);
    assert!(
        (0.3..=0.7).contains(&start),
        "accuracy before any feedback should be near chance, got {start:.3}"
    );
    assert!(
        end_clear >= 0.8,
        "accuracy on clear pairs after {EVENTS} choices is {end_clear:.3} < 0.8"
    );
    assert!(
        end_all >= 0.95 * ideal,
        "accuracy after {EVENTS} choices is {end_all:.3}, below 95 % of the batch fit's {ideal:.3}"
    );
}

#[test]
fn learning_is_deterministic_given_a_seed() {
    let samples = samples();
    let run = |seed| {
        let mut fl = new_loop(seed);
        rank_all(&mut fl, &samples);
        for (j, kind) in ["thumbs", "click", "copy"].iter().enumerate() {
            fl.record(
                RawFeedback {
                    candidate: Some(id(&samples[j], 0)),
                    up: (*kind == "thumbs").then_some(true),
                    ..event(kind)
                },
                NOW,
            )
            .unwrap();
        }
        fl.learning_state().clone()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).delta, run(8).delta);
}

#[test]
fn every_kind_teaches_in_its_direction() {
    let samples = samples();
    let s = &samples[0];
    let positive = [
        RawFeedback {
            up: Some(true),
            ..event("thumbs")
        },
        RawFeedback {
            stars: Some(5.0),
            ..event("stars")
        },
        event("click"),
        RawFeedback {
            ms: Some(10_000.0),
            ..event("dwell")
        },
        event("copy"),
    ];
    let negative = [
        RawFeedback {
            up: Some(false),
            ..event("thumbs")
        },
        RawFeedback {
            stars: Some(1.0),
            ..event("stars")
        },
        RawFeedback {
            category: Some("wrong".into()),
            ..event("flag")
        },
        event("regenerate"),
        event("skip"),
    ];
    for (raw, up) in positive
        .into_iter()
        .map(|r| (r, true))
        .chain(negative.into_iter().map(|r| (r, false)))
    {
        let mut fl = new_loop(3);
        rank_all(&mut fl, &samples);
        let kind = raw.kind.clone().unwrap();
        let outcome = fl
            .record(
                RawFeedback {
                    candidate: Some(id(s, 2)),
                    ..raw
                },
                NOW,
            )
            .unwrap();
        assert!(outcome.learned, "{kind}");
        assert_eq!(outcome.score_after > outcome.score_before, up, "{kind}");
    }
    // A correction prefers the edit: the original's score falls relative to the edit's.
    let mut fl = new_loop(3);
    rank_all(&mut fl, &samples);
    let outcome = fl
        .record(
            RawFeedback {
                candidate: Some(id(s, 0)),
                text: Some(s.candidates[1].clone()),
                ..event("correction")
            },
            NOW,
        )
        .unwrap();
    assert!(outcome.learned);
    assert!(outcome.score_after < outcome.score_before);
}

#[test]
fn caps_unknown_candidates_and_short_dwell() {
    let samples = samples();
    let mut fl = new_loop(5);
    rank_all(&mut fl, &samples);
    let thumbs = || RawFeedback {
        candidate: Some(id(&samples[1], 1)),
        up: Some(true),
        ..event("thumbs")
    };
    let cap = FeedbackWeights::default().max_events_per_candidate;
    for _ in 0..cap {
        assert!(fl.record(thumbs(), NOW).unwrap().learned);
    }
    let capped = fl.record(thumbs(), NOW).unwrap();
    assert!(!capped.learned);
    assert!(capped.reason.unwrap().contains("maxEventsPerCandidate"));
    assert_eq!(capped.score_before, capped.score_after);

    let err = fl
        .record(
            RawFeedback {
                candidate: Some("never-ranked".into()),
                ..event("click")
            },
            NOW,
        )
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("unknown candidate \"never-ranked\""));

    let short = fl
        .record(
            RawFeedback {
                candidate: Some(id(&samples[2], 0)),
                ms: Some(300.0),
                ..event("dwell")
            },
            NOW,
        )
        .unwrap();
    assert!(!short.learned);
    // Every event, learned or not, is in the local activity log.
    assert_eq!(fl.state().activity.len(), cap as usize + 2);
}

#[test]
fn explanations_add_up_and_confidence_grows_with_feedback() {
    let samples = samples();
    let mut fl = new_loop(9);
    let ranked = rank_all(&mut fl, &samples);
    let top = ranked[0][0].clone();
    let before = fl.explain(&top).unwrap();
    assert_eq!(before.personal_adjustment, 0.0);
    assert_eq!(before.confidence, 0.0);
    for _ in 0..3 {
        fl.record(
            RawFeedback {
                candidate: Some(top.clone()),
                up: Some(false),
                ..event("thumbs")
            },
            NOW,
        )
        .unwrap();
    }
    let after = fl.explain(&top).unwrap();
    assert!(after.personal_adjustment < 0.0);
    assert!(after.confidence > 0.5 && after.confidence < 1.0);
    let sum = after.relevance + after.global_preference + after.personal_adjustment;
    assert!((sum - after.score).abs() < 1e-5);
    assert!(fl.explain("nope").is_err());
}

#[test]
fn state_round_trips_and_two_tabs_merge_without_losing_learning() {
    let samples = samples();
    let parameters = RewardModel::bundled().unwrap().info().head_parameters;
    assert_eq!(
        parameters,
        2 * 64 + 4,
        "cosine, 2 × 64 embedding terms, length, lexical, bias"
    );
    let mut tab_a = new_loop(11);
    let mut tab_b = new_loop(12);
    rank_all(&mut tab_a, &samples);
    rank_all(&mut tab_b, &samples);
    let base = tab_a.state().clone();
    let thumbs = |candidate: String, up| RawFeedback {
        candidate: Some(candidate),
        up: Some(up),
        ..event("thumbs")
    };
    tab_a.record(thumbs(id(&samples[0], 0), true), NOW).unwrap();
    tab_b
        .record(thumbs(id(&samples[1], 1), false), NOW)
        .unwrap();
    tab_b.record(thumbs(id(&samples[1], 2), true), NOW).unwrap();

    let bytes = tab_a.state().to_bytes();
    let restored = PersonalState::from_bytes(&bytes, parameters).unwrap();
    assert_eq!(&restored, tab_a.state());
    assert!(PersonalState::from_bytes(&bytes[..bytes.len() / 2], parameters).is_err());
    assert!(PersonalState::from_bytes(b"nonsense", parameters).is_err());
    assert!(PersonalState::from_bytes(&bytes, 7).is_err());

    // Tab A saved first; tab B merges onto it.
    let merged = PersonalState::merge(tab_a.state(), &base, tab_b.state());
    assert_eq!(merged.learning.example_count, 3);
    assert_eq!(merged.activity.len(), 3);
    assert_eq!(merged.replay.len(), 3);
    for i in 0..parameters {
        let expected = tab_a.state().learning.delta[i] + tab_b.state().learning.delta[i];
        assert!((merged.learning.delta[i] - expected).abs() < 1e-6);
    }
    assert_eq!(merged.events_per_candidate.len(), 3);
}

/// More distinct texts than the embedding cache holds: the cache starts over mid-way and every
/// ranking still works (this once panicked when a cached context was dropped by the restart).
#[test]
fn ranking_more_texts_than_the_cache_holds() {
    let mut fl = new_loop(13);
    for batch in 0..45 {
        let texts: Vec<String> = (0..100)
            .map(|i| format!("answer number {} of batch {batch}", batch * 100 + i))
            .collect();
        let ids: Vec<String> = (0..100).map(|i| format!("b{batch}-{i}")).collect();
        let candidates: Vec<Candidate> = ids
            .iter()
            .zip(&texts)
            .map(|(id, text)| Candidate { id, text })
            .collect();
        assert_eq!(
            fl.rank("the same question", &candidates).unwrap().len(),
            100
        );
    }
    let outcome = fl
        .record(
            RawFeedback {
                candidate: Some("b0-1".into()),
                up: Some(true),
                ..event("thumbs")
            },
            NOW,
        )
        .unwrap();
    assert!(outcome.learned);
}

#[test]
fn adopting_a_new_global_head_keeps_what_was_learned_on_top() {
    let samples = samples();
    let mut fl = new_loop(11);
    let ranked = rank_all(&mut fl, &samples);
    let top = ranked[0][0].clone();
    fl.record(
        RawFeedback {
            candidate: Some(top.clone()),
            up: Some(false),
            ..event("thumbs")
        },
        NOW,
    )
    .unwrap();
    let learned = fl.explain(&top).unwrap();
    let delta = fl.learning_state().delta.clone();

    // A federated version: the global head moves (here: bigger weights on relevance, the cosine
    // and the lexical term, which φ holds second to last).
    let (_, old) = fl.global();
    let mut head = old.to_vec();
    head[0] *= 2.0;
    let lexical = head.len() - 2;
    head[lexical] *= 2.0;
    fl.set_global("7", &head).unwrap();
    assert_eq!(fl.global().0, "7");
    assert_eq!(fl.learning_state().base_version, "7");
    assert_eq!(
        fl.learning_state().delta,
        delta,
        "the personal delta is kept"
    );
    let rebased = fl.explain(&top).unwrap();
    assert_eq!(rebased.personal_adjustment, learned.personal_adjustment);
    assert!((rebased.relevance - 2.0 * learned.relevance).abs() < 1e-6);
    // The model's own head follows too (plain scoring uses it).
    assert_eq!(fl.model().head().to_vector(), head);
    // A head of the wrong size or with NaN is refused and changes nothing.
    assert!(fl.set_global("8", &head[..10]).is_err());
    let mut bad = head.clone();
    bad[3] = f32::NAN;
    assert!(fl.set_global("8", &bad).is_err());
    assert!(fl.set_global("", &head).is_err());
    assert_eq!(fl.global().0, "7");
}

/// The personal head a batch scorer (the GPU path) receives gives the scores `rank` gives, before
/// and after learning.
#[test]
fn the_personal_head_scores_what_rank_scores() {
    let samples = samples();
    let mut fl = new_loop(5);
    for round in 0..2 {
        for s in &samples {
            let ranked = rank_sample(&mut fl, s);
            let model = fl.model();
            let context = model.embed(&[s.question.as_str()]).unwrap();
            let texts: Vec<&str> = s.candidates.iter().map(String::as_str).collect();
            let embedded = model.embed(&texts).unwrap();
            let head = fl.personal_head();
            for r in &ranked {
                let lexical = model
                    .lexical_values(&model.token_ids(&s.question), &embedded)
                    .unwrap()
                    .map(|l| l[r.index]);
                let features = feedloop_core::PairFeatures::new(
                    context.row(0),
                    embedded.row(r.index),
                    embedded.token_counts[r.index],
                    model.info().max_tokens,
                )
                .with_lexical(lexical);
                let score = head.score(&features);
                assert!(
                    (score - r.score).abs() <= 1e-5 * r.score.abs().max(1.0),
                    "round {round}, {}: head {score} vs rank {}",
                    r.id,
                    r.score
                );
            }
        }
        let top = rank_sample(&mut fl, &samples[0])[0].id.clone();
        fl.record(
            RawFeedback {
                candidate: Some(top),
                up: Some(false),
                ..event("thumbs")
            },
            NOW,
        )
        .unwrap();
        assert!(fl.learning_state().delta.iter().any(|d| *d != 0.0));
    }
}

#[test]
fn a_thumbs_on_the_top_answer_is_the_thumbs_up_rate_observation() {
    let samples = samples();
    let mut fl = new_loop(3);
    let ranked: Vec<String> = rank_sample(&mut fl, &samples[0])
        .into_iter()
        .map(|r| r.id)
        .collect();
    let thumbs = |fl: &mut FeedbackLoop, candidate: &str, up: bool| {
        fl.record(
            RawFeedback {
                candidate: Some(candidate.to_string()),
                up: Some(up),
                ..event("thumbs")
            },
            NOW,
        )
        .unwrap()
        .thumbs_on_top
    };
    assert_eq!(thumbs(&mut fl, &ranked[0], true), Some(true));
    assert_eq!(
        thumbs(&mut fl, &ranked[1], false),
        None,
        "not the top answer"
    );
    // Other kinds are no thumbs observation, even on the top answer.
    let copy = fl
        .record(
            RawFeedback {
                candidate: Some(ranked[0].clone()),
                ..event("copy")
            },
            NOW,
        )
        .unwrap();
    assert_eq!(copy.thumbs_on_top, None);
    // After re-ranking, "first" is whatever the model ranks first now.
    let again: Vec<String> = rank_sample(&mut fl, &samples[0])
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(thumbs(&mut fl, &again[0], false), Some(false));
    if again[0] != ranked[0] {
        assert_eq!(thumbs(&mut fl, &ranked[0], true), None);
    }
}

/// Federated evaluation: an "A or B" choice says whether the *global* head already preferred the
/// chosen answer, judged before learning (the personal head's learning does not change it).
#[test]
fn an_a_or_b_choice_says_whether_the_global_model_agreed() {
    let samples = samples();
    let mut fl = new_loop(3);
    let ranked: Vec<String> = rank_sample(&mut fl, &samples[0])
        .into_iter()
        .map(|r| r.id)
        .collect();
    let (first, last) = (ranked[0].clone(), ranked.last().unwrap().clone());
    let choose = |fl: &mut FeedbackLoop, winner: &str, loser: &str| {
        fl.record(
            RawFeedback {
                winner: Some(winner.to_string()),
                loser: Some(loser.to_string()),
                ..event("pairwise")
            },
            NOW,
        )
        .unwrap()
        .global_agreed
    };
    // The global model ranked `first` above `last`: choosing it agrees, the reverse does not —
    // also after the personal head learned the reverse many times.
    assert_eq!(choose(&mut fl, &first, &last), Some(true));
    for _ in 0..5 {
        assert_eq!(choose(&mut fl, &last, &first), Some(false));
    }
    assert_eq!(choose(&mut fl, &first, &last), Some(true));
    let thumbs = fl
        .record(
            RawFeedback {
                candidate: Some(first.clone()),
                up: Some(true),
                ..event("thumbs")
            },
            NOW,
        )
        .unwrap();
    assert_eq!(thumbs.global_agreed, None, "only choices are evaluated");
}
