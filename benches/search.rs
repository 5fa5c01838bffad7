//! Search benchmark: indexing throughput and phrase-query latency over 1,000,000 messages in
//! 10,000 conversations, for a user in 100 and in 5,000 conversations, on the embedded adapter
//! and, in the same run, on a bare tantivy index of the same data with the same analysis,
//! threads and commit batches. The ratio is our overhead over the engine.
//!
//! The adapter matches the last word of a query as a prefix (search as you type); the bare
//! engine runs each query as the adapter's prefix query, and its whole-word form as the plain
//! phrase (what version 1 ran), so the table shows what the prefix costs next to the plain
//! phrase, with whole last words and with last words cut to their first three letters (what a
//! user has typed so far).
//!
//!     cargo bench --bench search                 # the full run (1,000,000 messages)
//!     IM_BENCH_MESSAGES=100000 cargo bench --bench search
//!
//! Prints a table and writes it as JSON to target/bench-search.json.

use im_shared::search::analyzer::terms;
use im_shared::search::embedded::{ImTokenizer, TOKENIZER};
use im_shared::search::embedded::{TantivySearch, text_query};
use im_shared::search::{Doc, MessageDoc, Search, SearchQuery, message_id};
use std::time::{Duration, Instant};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, PhraseQuery, Query, TermSetQuery};
use tantivy::schema::{INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::{Index, Order, TantivyDocument, Term};

const CONVERSATIONS: usize = 10_000;
const BATCH: usize = 5_000;
const QUERIES: usize = 300;

/// A small deterministic generator (xorshift64*), so every run indexes the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "meeting", "deploy", "release", "coffee", "lunch", "review", "bug", "fix", "report", "weekend", "train", "ticket",
    "budget", "design", "server", "database", "search", "index", "launch", "team", "customer", "invoice", "photo",
    "party", "birthday", "flight", "hotel", "schedule", "update", "question", "answer", "tomorrow", "today", "great",
    "thanks", "please", "morning", "evening", "project", "deadline",
];
const CJK: &[&str] = &[
    "表格存储",
    "欢迎使用",
    "服务",
    "明天开会",
    "東京タワー",
    "行きました",
    "한국어",
    "검색 엔진",
    "消息同步",
    "未读计数",
];

fn text(rng: &mut Rng) -> String {
    let n = 6 + rng.below(12);
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        if rng.below(5) == 0 {
            parts.push(CJK[rng.below(CJK.len())])
        } else {
            parts.push(WORDS[rng.below(WORDS.len())])
        }
    }
    parts.join(" ")
}

fn docs(n: usize) -> Vec<MessageDoc> {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    (0..n)
        .map(|i| MessageDoc {
            conversation_id: format!("g_c{:05}", i % CONVERSATIONS),
            seq: (i / CONVERSATIONS) as i64 + 1,
            send_time: 1_700_000_000_000 + i as i64,
            text: text(&mut rng),
        })
        .collect()
}

/// Two-word phrases taken from the data (so they have hits), and a user's conversations.
fn workload(data: &[MessageDoc], users_convs: usize, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut rng = Rng(seed);
    let phrases = (0..QUERIES)
        .map(|_| {
            let words: Vec<&str> = data[rng.below(data.len())].text.split(' ').collect();
            let i = rng.below(words.len().saturating_sub(1).max(1));
            words[i..(i + 2).min(words.len())].join(" ")
        })
        .collect();
    let mut convs: Vec<String> = (0..CONVERSATIONS).map(|c| format!("g_c{c:05}")).collect();
    for i in 0..users_convs {
        let j = i + rng.below(CONVERSATIONS - i);
        convs.swap(i, j);
    }
    convs.truncate(users_convs);
    (phrases, convs)
}

/// The bare engine: the same schema, tokenizer, threads and commit batches, no adapter.
struct Bare {
    index: Index,
    reader: tantivy::IndexReader,
    id: tantivy::schema::Field,
    scope: tantivy::schema::Field,
    text: tantivy::schema::Field,
}

impl Bare {
    fn build(dir: &std::path::Path, data: &[MessageDoc]) -> (Bare, Duration) {
        let mut b = Schema::builder();
        let opts = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let id = b.add_text_field("id", STRING | STORED);
        let scope = b.add_text_field("scope", STRING);
        let time = b.add_i64_field("time", INDEXED | STORED | tantivy::schema::FAST);
        let tiebreak = b.add_i64_field("tiebreak", INDEXED | STORED | tantivy::schema::FAST);
        let text = b.add_text_field("text", opts);
        std::fs::create_dir_all(dir).unwrap();
        let index = Index::create_in_dir(dir, b.build()).unwrap();
        index.tokenizers().register(TOKENIZER, ImTokenizer::default());
        let mut w: tantivy::IndexWriter = index.writer_with_num_threads(1, 50_000_000).unwrap();
        let start = Instant::now();
        for chunk in data.chunks(BATCH) {
            for m in chunk {
                let mid = message_id(&m.conversation_id, m.seq);
                let mut d = TantivyDocument::default();
                d.add_text(id, &mid);
                d.add_text(scope, &m.conversation_id);
                d.add_i64(time, m.send_time);
                d.add_i64(tiebreak, im_shared::search::tiebreak(&mid));
                d.add_text(text, &m.text);
                w.add_document(d).unwrap();
            }
            w.commit().unwrap();
        }
        let took = start.elapsed();
        let reader = index.reader().unwrap();
        (Bare { index, reader, id, scope, text }, took)
    }

    /// The 30 newest hits of `phrase` in `convs`: the plain phrase, or with its last word as a
    /// prefix (the adapter's query).
    fn search(&self, phrase: &str, convs: &[String], prefix: bool) -> Vec<String> {
        let ts: Vec<Term> = terms(phrase).iter().map(|t| Term::from_field_text(self.text, t)).collect();
        let text: Box<dyn Query> = if prefix {
            text_query(self.text, phrase).expect("a phrase with words")
        } else if ts.len() == 1 {
            Box::new(tantivy::query::TermQuery::new(ts[0].clone(), IndexRecordOption::Basic))
        } else {
            Box::new(PhraseQuery::new(ts))
        };
        let filter = TermSetQuery::new(convs.iter().map(|c| Term::from_field_text(self.scope, c)));
        let q = BooleanQuery::new(vec![(Occur::Must, text), (Occur::Must, Box::new(filter))]);
        let searcher = self.reader.searcher();
        let top =
            searcher.search(&q, &TopDocs::with_limit(31).order_by_fast_field::<i64>("time", Order::Desc)).unwrap();
        top.iter()
            .take(30)
            .map(|(_, a)| {
                let d: TantivyDocument = searcher.doc(*a).unwrap();
                d.get_first(self.id).and_then(|v| v.as_str()).unwrap_or_default().to_string()
            })
            .collect()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing of ours: do a tiny run.
    let n: usize = std::env::var("IM_BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "search benchmark: {n} messages in {CONVERSATIONS} conversations, {QUERIES} phrase queries per case, {} cores",
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    let data = docs(n);

    let ours = TantivySearch::open(&dir.path().join("ours")).unwrap();
    let start = Instant::now();
    rt.block_on(async {
        for chunk in data.chunks(BATCH) {
            let out = ours.index(chunk.iter().cloned().map(Doc::Message).collect()).await.unwrap();
            assert!(out.iter().all(Option::is_none));
        }
    });
    let ours_index = start.elapsed();
    let (bare, bare_index) = Bare::build(&dir.path().join("bare"), &data);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("\nindexing (batches of {BATCH}, one commit each)");
    println!("  adapter      {:>10.0} msg/s  ({:.1} s)", rate(ours_index), ours_index.as_secs_f64());
    println!("  bare tantivy {:>10.0} msg/s  ({:.1} s)", rate(bare_index), bare_index.as_secs_f64());
    println!("  ratio        {:>10.2}", bare_index.as_secs_f64() / ours_index.as_secs_f64());

    let mut json = vec![format!(
        "\"indexing\":{{\"messages\":{n},\"adapter_msgs_per_s\":{:.0},\"bare_msgs_per_s\":{:.0}}}",
        rate(ours_index),
        rate(bare_index)
    )];
    println!("\nphrase queries, 30 newest hits, filtered to the user's conversations: p50 / p99 ms");
    println!(
        "  {:<18} {:<22} {:>15} {:>15} {:>15} {:>12}",
        "user in", "last word", "bare, plain", "bare, prefix", "ours", "ours / plain"
    );
    for convs_n in [100usize, 5_000] {
        let (phrases, convs) = workload(&data, convs_n, 42 + convs_n as u64);
        // The phrases' first words alone: a single word is a range of the term dictionary, not
        // a phrase, on both engines.
        let words: Vec<String> = phrases.iter().map(|p| p.split(' ').next().unwrap_or(p).to_string()).collect();
        // The same queries with the last word cut to three letters (CJK characters stay).
        let cut = |queries: &[String]| -> Vec<String> {
            queries
                .iter()
                .map(|p| {
                    let (head, last) = p.rsplit_once(' ').map_or(("", p.as_str()), |(h, l)| (h, l));
                    let last = if last.is_ascii() && last.len() > 3 { &last[..3] } else { last };
                    if head.is_empty() { last.to_string() } else { format!("{head} {last}") }
                })
                .collect()
        };
        let (typed, typed_words) = (cut(&phrases), cut(&words));
        for (kind, key, queries, whole) in [
            ("two words, whole", "phrase_whole", &phrases, &phrases),
            ("two words, cut to 3", "phrase_cut", &typed, &phrases),
            ("one word, whole", "word_whole", &words, &words),
            ("one word, cut to 3", "word_cut", &typed_words, &words),
        ] {
            let (mut plain_t, mut prefix_t, mut ours_t) = (Vec::new(), Vec::new(), Vec::new());
            for (i, p) in queries.iter().enumerate() {
                let q = SearchQuery { phrase: p.clone(), conversations: convs.clone(), limit: 30, after: None };
                let t = Instant::now();
                let ours_hits = rt.block_on(ours.search_messages(q)).unwrap();
                ours_t.push(t.elapsed());
                let t = Instant::now();
                let prefix_hits = bare.search(p, &convs, true);
                prefix_t.push(t.elapsed());
                // The plain phrase of whole words: what version 1 ran, the baseline of both rows.
                let t = Instant::now();
                bare.search(&whole[i], &convs, false);
                plain_t.push(t.elapsed());
                if i < 20 {
                    // The same hits, or the comparison means nothing (ties aside, by time they agree).
                    assert_eq!(ours_hits.hits.len(), prefix_hits.len(), "query {p:?}");
                }
            }
            let mut stats = Vec::new();
            for t in [&mut plain_t, &mut prefix_t, &mut ours_t] {
                t.sort();
                stats.push((percentile(t, 0.5), percentile(t, 0.99)));
            }
            let cell = |(p50, p99): (f64, f64)| format!("{p50:.2} / {p99:.2}");
            println!(
                "  {:<18} {kind:<22} {:>15} {:>15} {:>15} {:>12.2}",
                format!("{convs_n} conversations"),
                cell(stats[0]),
                cell(stats[1]),
                cell(stats[2]),
                stats[2].0 / stats[0].0
            );
            json.push(format!(
                "\"user_in_{convs_n}_{key}\":{{\"bare_phrase_p50_ms\":{:.3},\"bare_phrase_p99_ms\":{:.3},\"bare_prefix_p50_ms\":{:.3},\"bare_prefix_p99_ms\":{:.3},\"ours_p50_ms\":{:.3},\"ours_p99_ms\":{:.3}}}",
                stats[0].0, stats[0].1, stats[1].0, stats[1].1, stats[2].0, stats[2].1
            ));
        }
    }
    let _ = bare.index;
    let out = format!("{{{}}}\n", json.join(","));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-search.json");
    if std::fs::write(&path, &out).is_ok() {
        println!("\nwritten to {}", path.display());
    }
}
