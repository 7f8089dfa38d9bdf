//! The steps of a campaign as a graph: a customer goes from a step to the next
//! one in the file, to a `goto:` target, or to any arm's target of a `branch:`.
//! Two questions are asked of it before a campaign is accepted: which steps
//! no path from the first step reaches, and which loops could send their
//! messages over and over without ever waiting.
//!
//! Every `goto:` must name a step of the campaign (the parser checks that
//! first).

use std::collections::{HashMap, VecDeque};

use super::{Route, Step};

/// A way from one step to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Edge {
    to: usize,
    /// The arm of the step's `branch:` this edge comes from; `None` for a
    /// `goto:` or falling through to the next step.
    arm: Option<usize>,
}

/// Where a customer can go after step `i`; `at` finds a step by id.
fn edges(steps: &[Step], i: usize, at: &dyn Fn(&str) -> Option<usize>) -> Vec<Edge> {
    if matches!(steps[i].route, Route::Next) {
        return (i + 1 < steps.len())
            .then_some(Edge {
                to: i + 1,
                arm: None,
            })
            .into_iter()
            .collect();
    }
    steps[i]
        .route
        .targets()
        .into_iter()
        .filter_map(|(arm, id)| at(id).map(|to| Edge { to, arm }))
        .collect()
}

fn graph(steps: &[Step]) -> Vec<Vec<Edge>> {
    let ids: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let at = |id: &str| ids.get(id).copied();
    (0..steps.len()).map(|i| edges(steps, i, &at)).collect()
}

/// Which steps a customer can reach from the first.
fn reached(graph: &[Vec<Edge>]) -> Vec<bool> {
    let mut seen = vec![false; graph.len()];
    let mut todo = Vec::new();
    if !graph.is_empty() {
        seen[0] = true;
        todo.push(0);
    }
    while let Some(v) = todo.pop() {
        for e in &graph[v] {
            if !seen[e.to] {
                seen[e.to] = true;
                todo.push(e.to);
            }
        }
    }
    seen
}

/// The steps no path from the first step reaches, in file order.
pub(super) fn unreachable(steps: &[Step]) -> Vec<usize> {
    let seen = reached(&graph(steps));
    (0..steps.len()).filter(|&i| !seen[i]).collect()
}

/// A loop through steps none of which waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Loop {
    /// The steps in the order a customer goes round, from the one first in
    /// the file; the last one goes back to the first.
    pub steps: Vec<usize>,
    /// When the way back is an arm of the last step's `branch:`, which one
    /// (else it is the last step's `goto:`).
    pub arm: Option<usize>,
}

/// One loop per group of reachable steps that can go round without waiting
/// (a strongly connected component of the steps that do not wait), in the
/// file order of their first step. Shortest of its group, so the message
/// names few steps.
pub(super) fn loops_without_wait(steps: &[Step]) -> Vec<Loop> {
    let graph = graph(steps);
    let seen = reached(&graph);
    let keep: Vec<bool> = (0..steps.len())
        .map(|i| seen[i] && !steps[i].waits())
        .collect();
    let mut out: Vec<Loop> = components(&graph, &keep)
        .into_iter()
        .filter_map(|group| shortest_loop(&graph, &group))
        .collect();
    out.sort_by_key(|l| l.steps[0]);
    out
}

/// The shortest way from the group's first step (in file order) back to it,
/// through the group's steps only; `None` for a single step without an edge
/// to itself.
fn shortest_loop(graph: &[Vec<Edge>], group: &[usize]) -> Option<Loop> {
    let start = *group.iter().min()?;
    let mut inside = vec![false; graph.len()];
    for &v in group {
        inside[v] = true;
    }
    // Breadth first from `start`; the first step found with an edge back closes the loop.
    let mut parent: Vec<Option<usize>> = vec![None; graph.len()];
    let mut queue = VecDeque::from([start]);
    let mut visited = vec![false; graph.len()];
    visited[start] = true;
    while let Some(v) = queue.pop_front() {
        if let Some(back) = graph[v].iter().find(|e| e.to == start) {
            let mut path = vec![v];
            let mut at = v;
            while let Some(p) = parent[at] {
                path.push(p);
                at = p;
            }
            path.reverse();
            return Some(Loop {
                steps: path,
                arm: back.arm,
            });
        }
        for e in &graph[v] {
            if inside[e.to] && !visited[e.to] {
                visited[e.to] = true;
                parent[e.to] = Some(v);
                queue.push_back(e.to);
            }
        }
    }
    None
}

/// Strongly connected components of the graph restricted to the steps in
/// `keep` (Tarjan's algorithm, with an explicit stack: a file may hold many
/// steps).
fn components(graph: &[Vec<Edge>], keep: &[bool]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = graph.len();
    let mut order = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if !keep[root] || order[root] != UNSEEN {
            continue;
        }
        // (step, how many of its edges were followed)
        let mut work = vec![(root, 0usize)];
        order[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&(v, followed)) = work.last() {
            if let Some(e) = graph[v].get(followed) {
                if let Some(top) = work.last_mut() {
                    top.1 += 1;
                }
                let w = e.to;
                if !keep[w] {
                    continue;
                }
                if order[w] == UNSEEN {
                    order[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(order[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(u, _)) = work.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == order[v] {
                let mut group = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    group.push(w);
                    if w == v {
                        break;
                    }
                }
                out.push(group);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Jump;
    use super::*;

    /// Steps named a, b, c, … with these routes; `true` marks a step that waits.
    fn steps(routes: Vec<(Route, bool)>) -> Vec<Step> {
        routes
            .into_iter()
            .enumerate()
            .map(|(i, (route, waits))| Step {
                id: ((b'a' + i as u8) as char).to_string(),
                subject: "s".into(),
                template: "t".into(),
                wait: waits.then(|| "1d".parse().unwrap()),
                wait_until: None,
                wait_for: None,
                when: None,
                events: Vec::new(),
                route,
            })
            .collect()
    }

    fn goto(id: &str) -> Route {
        Route::Goto(id.into())
    }

    fn branch(targets: &[&str]) -> Route {
        Route::Branch(
            targets
                .iter()
                .map(|t| super::super::Arm {
                    when: None,
                    to: Jump::Goto(t.to_string()),
                })
                .collect(),
        )
    }

    #[test]
    fn a_straight_sequence_reaches_everything_and_never_loops() {
        let s = steps(vec![(Route::Next, false); 4]);
        assert_eq!(unreachable(&s), Vec::<usize>::new());
        assert_eq!(loops_without_wait(&s), vec![]);
    }

    #[test]
    fn steps_after_an_exit_or_a_goto_are_unreachable_unless_named() {
        let s = steps(vec![
            (goto("c"), false),
            (Route::Next, false), // b: skipped by a's goto
            (Route::Exit("done".into()), false),
            (Route::Next, false), // d: after an exit
            (Route::Next, false), // e: d falls through to it, but d is never reached
        ]);
        assert_eq!(unreachable(&s), vec![1, 3, 4]);
    }

    #[test]
    fn every_arm_of_a_branch_is_a_way() {
        let s = steps(vec![
            (branch(&["c", "d"]), false),
            (Route::Next, false),
            (Route::Exit("x".into()), false),
            (Route::Next, false),
        ]);
        assert_eq!(unreachable(&s), vec![1]);
    }

    #[test]
    fn loops_name_their_steps_in_order_from_the_first_in_the_file() {
        // a → b → c → b: the loop b → c → b, closed by c's goto.
        let s = steps(vec![
            (Route::Next, false),
            (Route::Next, false),
            (goto("b"), false),
        ]);
        assert_eq!(
            loops_without_wait(&s),
            vec![Loop {
                steps: vec![1, 2],
                arm: None
            }]
        );
        // A wait anywhere in the loop breaks it.
        let s = steps(vec![
            (Route::Next, false),
            (Route::Next, true),
            (goto("b"), false),
        ]);
        assert_eq!(loops_without_wait(&s), vec![]);
    }

    #[test]
    fn a_branch_back_to_itself_is_a_loop_through_that_arm() {
        let s = steps(vec![
            (Route::Next, false),
            (branch(&["c", "b"]), false),
            (Route::Exit("x".into()), false),
        ]);
        assert_eq!(
            loops_without_wait(&s),
            vec![Loop {
                steps: vec![1],
                arm: Some(1)
            }]
        );
    }

    #[test]
    fn one_loop_per_group_the_shortest() {
        // a → b → c → d → a and c → a: one group; the shortest loop from a is a → b → c → a.
        let s = steps(vec![
            (Route::Next, false),
            (Route::Next, false),
            (branch(&["d", "a"]), false),
            (goto("a"), false),
        ]);
        assert_eq!(
            loops_without_wait(&s),
            vec![Loop {
                steps: vec![0, 1, 2],
                arm: Some(1)
            }]
        );
    }

    #[test]
    fn unreachable_loops_are_left_to_the_unreachable_report() {
        let s = steps(vec![
            (Route::Exit("x".into()), false),
            (goto("c"), false),
            (goto("b"), false),
        ]);
        assert_eq!(unreachable(&s), vec![1, 2]);
        assert_eq!(loops_without_wait(&s), vec![]);
    }

    #[test]
    fn a_long_file_does_not_overflow_the_stack() {
        let n = 20_000;
        let mut s: Vec<Step> = (0..n)
            .map(|i| {
                let mut step = steps(vec![(Route::Next, false)]).remove(0);
                step.id = format!("s{i}");
                step
            })
            .collect();
        s[n - 1].route = Route::Goto("s0".into());
        let loops = loops_without_wait(&s);
        assert_eq!(loops.len(), 1);
        assert_eq!(loops[0].steps.len(), n);
        assert_eq!(loops[0].steps[n - 1], n - 1);
    }
}
