//! Decisions off the engine's thread.
//!
//! [`DecisionPool`] runs a policy (the plugin slot) on a few worker threads.
//! Each IKE engine gets an [`AsyncPolicy`] handle from it: a question the
//! pool has not answered yet is queued and answered
//! [`PolicyError::Deferred`] at once, so the engine parks only the
//! negotiation that asked and goes on with every other SA (DPD, rekeys,
//! retransmissions). When the answer is in, the handle's waker tells the
//! engine's driver, which calls `Engine::policy_ready`; the engine asks the
//! same question again and gets the answer from the pool's memory.
//!
//! Fair: waiting questions are queued per connection and the workers serve
//! the connections in turn, so a connection flooded with negotiations delays
//! another's decisions by at most one decision per busy connection.
//!
//! Bounded: at most [`MAX_QUEUED`] questions wait, [`MAX_QUEUED_PER_CONNECTION`]
//! of one connection (more are refused with
//! [`PolicyError::Failed`], counted in [`PoolStats::refused`]); answers are
//! kept [`ANSWER_TTL`] and at most [`MAX_ANSWERS`] of them. The same question
//! asked by several engines (or again while queued) is asked of the policy
//! once. [`DecisionPool::forget_answers`] drops what was learnt when another
//! policy version takes charge.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wisp_policy_api::{Answer, AskPolicy, Policy, PolicyError, Question};

/// Questions waiting for a worker, daemon-wide.
pub const MAX_QUEUED: usize = 1024;
/// Questions of one connection waiting for a worker.
pub const MAX_QUEUED_PER_CONNECTION: usize = 256;
/// Answers remembered for engines to pick up.
pub const MAX_ANSWERS: usize = 8192;
/// How long an answer is remembered (an engine asks again within
/// milliseconds of being told; a longer life only serves identical
/// questions of other negotiations).
pub const ANSWER_TTL: Duration = Duration::from_secs(10);

/// Called (from a worker thread) when an answer an engine waits for is in.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Counters of a pool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Questions asked of the policy.
    pub asked: u64,
    /// Answers given from memory.
    pub remembered: u64,
    /// Questions refused because [`MAX_QUEUED`] were waiting.
    pub refused: u64,
    /// Questions waiting now.
    pub queued: usize,
    /// Questions being decided now.
    pub running: usize,
}

/// Waiting questions, one queue per connection, served in turn.
#[derive(Default)]
struct Queues {
    by_conn: BTreeMap<String, VecDeque<Question>>,
    /// The connection served last.
    last: Option<String>,
    len: usize,
}

impl Queues {
    fn len_of(&self, conn: &str) -> usize {
        self.by_conn.get(conn).map_or(0, VecDeque::len)
    }

    fn push(&mut self, q: Question) {
        self.by_conn.entry(q.connection().to_string()).or_default().push_back(q);
        self.len += 1;
    }

    /// The first question of the connection after the one served last.
    fn pop(&mut self) -> Option<Question> {
        let next = match &self.last {
            Some(l) => self.by_conn.range::<String, _>((Bound::Excluded(l.clone()), Bound::Unbounded)).next(),
            None => None,
        };
        let conn = next.or_else(|| self.by_conn.iter().next()).map(|(k, _)| k.clone())?;
        let queue = self.by_conn.get_mut(&conn)?;
        let q = queue.pop_front();
        if queue.is_empty() {
            self.by_conn.remove(&conn);
        }
        self.len -= usize::from(q.is_some());
        self.last = Some(conn);
        q
    }
}

#[derive(Default)]
struct State {
    queue: Queues,
    /// Queued or running questions and who waits for each.
    waiting: HashMap<Question, Vec<Waker>>,
    answers: HashMap<Question, (Instant, Answer)>,
    running: usize,
    stop: bool,
}

struct Shared {
    policy: Arc<dyn Policy>,
    state: Mutex<State>,
    work: Condvar,
    asked: AtomicU64,
    remembered: AtomicU64,
    refused: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Worker threads deciding for every engine of a daemon. Dropping the pool
/// stops its workers (after the decisions they are in).
pub struct DecisionPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl DecisionPool {
    /// `workers` threads (at least one) deciding with `policy`.
    pub fn new(policy: Arc<dyn Policy>, workers: usize) -> std::io::Result<DecisionPool> {
        let shared = Arc::new(Shared {
            policy,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            asked: AtomicU64::new(0),
            remembered: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let mut pool = DecisionPool { shared, workers: Vec::new() };
        for i in 0..workers.max(1) {
            let s = pool.shared.clone();
            pool.workers.push(std::thread::Builder::new().name(format!("policy-{i}")).spawn(move || work(&s))?);
        }
        Ok(pool)
    }

    /// A handle for one engine; `waker` is called when an answer it waits
    /// for is in.
    pub fn handle(&self, waker: Waker) -> AsyncPolicy {
        AsyncPolicy { shared: self.shared.clone(), waker }
    }

    /// Forget every remembered answer (another policy version is in charge).
    /// Questions being decided still deliver their answers.
    pub fn forget_answers(&self) {
        self.shared.lock().answers.clear();
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.shared.lock();
        PoolStats {
            asked: self.shared.asked.load(Ordering::Relaxed),
            remembered: self.shared.remembered.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            queued: st.queue.len,
            running: st.running,
        }
    }
}

impl Drop for DecisionPool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn work(s: &Shared) {
    loop {
        let q = {
            let mut st = s.lock();
            loop {
                if st.stop {
                    return;
                }
                if let Some(q) = st.queue.pop() {
                    st.running += 1;
                    break q;
                }
                st = s.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        s.asked.fetch_add(1, Ordering::Relaxed);
        let a = q.ask(&*s.policy);
        let wakers = {
            let mut st = s.lock();
            st.running -= 1;
            if st.answers.len() >= MAX_ANSWERS {
                let now = Instant::now();
                st.answers.retain(|_, (at, _)| now.duration_since(*at) < ANSWER_TTL);
                if st.answers.len() >= MAX_ANSWERS {
                    st.answers.clear();
                }
            }
            let wakers = st.waiting.remove(&q).unwrap_or_default();
            st.answers.insert(q, (Instant::now(), a));
            wakers
        };
        for w in wakers {
            w();
        }
    }
}

/// One engine's view of a [`DecisionPool`]: a [`Policy`] (through
/// [`AskPolicy`]) that never blocks.
pub struct AsyncPolicy {
    shared: Arc<Shared>,
    waker: Waker,
}

impl AsyncPolicy {
    fn ask(&self, q: Question) -> Result<Answer, PolicyError> {
        let s = &self.shared;
        let mut st = s.lock();
        if let Some((at, a)) = st.answers.get(&q) {
            if at.elapsed() < ANSWER_TTL {
                s.remembered.fetch_add(1, Ordering::Relaxed);
                return Ok(a.clone());
            }
            st.answers.remove(&q);
        }
        let decider = s.policy.describe();
        let (queued, of_conn) = (st.queue.len, st.queue.len_of(q.connection()));
        match st.waiting.entry(q) {
            Entry::Occupied(mut e) => {
                let w = e.get_mut();
                if !w.iter().any(|x| Arc::ptr_eq(x, &self.waker)) {
                    w.push(self.waker.clone());
                }
            }
            Entry::Vacant(e) => {
                if queued >= MAX_QUEUED || of_conn >= MAX_QUEUED_PER_CONNECTION {
                    s.refused.fetch_add(1, Ordering::Relaxed);
                    let detail = if queued >= MAX_QUEUED {
                        format!("{MAX_QUEUED} decisions already waiting (overloaded)")
                    } else {
                        format!("{MAX_QUEUED_PER_CONNECTION} decisions of connection {} already waiting (overloaded)", e.key().connection())
                    };
                    return Err(PolicyError::Failed { decider, detail });
                }
                let q = e.key().clone();
                e.insert(vec![self.waker.clone()]);
                st.queue.push(q);
                s.work.notify_one();
            }
        }
        Err(PolicyError::Deferred { decider })
    }
}

impl AskPolicy for AsyncPolicy {
    fn decider(&self) -> String {
        self.shared.policy.describe()
    }
    fn answer(&self, q: Question) -> Result<Answer, PolicyError> {
        self.ask(q)
    }
}
