//! Prompt editing and alternation over the sampling steps: AUTOMATIC1111's
//! `get_learned_conditioning_prompt_schedules` (`modules/prompt_parser.py`) for one
//! prompt, with its current ("new") scheduling and no hires pass, and the entry choice of
//! its `reconstruct_cond_batch`.
//!
//! `[from:to:when]` shows `from` up to step `when` and `to` after it; `[to:when]` and
//! `[from::when]` leave one side empty. A `when` written with a `.` is a fraction of the
//! steps (`.5` of 20 is step 10), any other number a step (`1e1` is step 10, `0.57` of 100
//! is step 56, as Python's `int(0.57 * 100)`). `[a|b|c]` cycles through its options, one
//! per step. The schedule lists each distinct text with the last step (1-based) that uses
//! it.

use super::grammar::{Node, parse};

/// One text of a prompt's schedule and the last step (1-based, inclusive) it is used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledText {
    pub end_step: usize,
    pub text: String,
}

/// A1111's `get_learned_conditioning_prompt_schedules` for one prompt: the texts and the
/// step each one lasts until, in step order (the last ends at `steps`). A prompt that
/// does not parse is itself for all steps.
pub fn prompt_schedule(prompt: &str, steps: usize) -> Vec<ScheduledText> {
    let Some(tree) = parse(prompt) else {
        return vec![ScheduledText {
            end_step: steps,
            text: prompt.to_string(),
        }];
    };
    let mut ends = vec![steps];
    collect_steps(&tree, steps, &mut ends);
    ends.sort_unstable();
    ends.dedup();
    ends.into_iter()
        .map(|end_step| {
            let mut text = String::new();
            write_at_step(&tree, end_step, steps, &mut text);
            ScheduledText { end_step, text }
        })
        .collect()
}

/// Which entry a 0-based sampling step uses (A1111's `reconstruct_cond_batch`: the first
/// whose `end_step >= step`, else the first).
pub fn entry_at(schedule: &[ScheduledText], step: usize) -> usize {
    schedule
        .iter()
        .position(|e| step <= e.end_step)
        .unwrap_or(0)
}

/// The step a `when` stands for: `min(steps, int(v))`, where `v` is the number, times
/// `steps` when written with a `.`. May be 0 or negative (then `to` shows from the
/// start).
fn when_step(when: &str, steps: usize) -> i64 {
    // `grammar` accepted `when` as lark's SIGNED_NUMBER, which Rust's float syntax covers.
    let Ok(mut v) = when.parse::<f64>() else {
        return steps as i64;
    };
    if when.contains('.') {
        v *= steps as f64;
    }
    // Python's int() truncates; an infinite `v` (1e999) would make A1111 fail, we clamp.
    if v >= steps as f64 {
        steps as i64
    } else {
        v.trunc() as i64
    }
}

/// A1111's `CollectSteps`: the end steps each edit and alternation adds.
fn collect_steps(nodes: &[Node], steps: usize, ends: &mut Vec<usize>) {
    for node in nodes {
        match node {
            Node::Text(_) => {}
            Node::Scheduled {
                before,
                after,
                when,
            } => {
                let w = when_step(when, steps);
                if w >= 1 {
                    ends.push(w as usize);
                }
                collect_steps(before, steps, ends);
                collect_steps(after, steps, ends);
            }
            Node::Alternate(options) => {
                ends.extend(1..=steps);
                for o in options {
                    collect_steps(o, steps, ends);
                }
            }
        }
    }
}

/// A1111's `AtStep`: the text at 1-based `step`.
fn write_at_step(nodes: &[Node], step: usize, steps: usize, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Scheduled {
                before,
                after,
                when,
            } => {
                let side = if step as i64 <= when_step(when, steps) {
                    before
                } else {
                    after
                };
                write_at_step(side, step, steps, out);
            }
            Node::Alternate(options) => {
                // Python's `(step - 1) % len`, never negative (step 0 picks the last).
                let i = (step as i64 - 1).rem_euclid(options.len() as i64) as usize;
                write_at_step(&options[i], step, steps, out);
            }
        }
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
