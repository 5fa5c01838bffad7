//! The Search port's contract: phrase matching with the project's analysis (CJK by substring,
//! other scripts by word, case-insensitive, the last word as a prefix), newest first, paged,
//! filtered by conversation inside the engine, idempotent re-indexing.

use super::unique;
use im_shared::search::{After, Doc, GroupDoc, MessageDoc, Search, SearchQuery, StagedDoc};
use std::sync::Arc;

pub type Adapter = Arc<dyn Search>;

fn msg(conv: &str, seq: i64, time: i64, text: &str) -> Doc {
    Doc::Message(MessageDoc { conversation_id: conv.into(), seq, send_time: time, text: text.into() })
}

async fn index(s: &Adapter, docs: Vec<Doc>) {
    let n = docs.len();
    let outcome = s.index(docs).await.expect("index");
    assert_eq!(outcome, vec![None; n], "every document indexed");
}

fn q(phrase: &str, conversations: &[&str]) -> SearchQuery {
    SearchQuery {
        phrase: phrase.into(),
        conversations: conversations.iter().map(|c| c.to_string()).collect(),
        limit: 100,
        after: None,
    }
}

async fn ids(s: &Adapter, query: SearchQuery) -> Vec<String> {
    s.search_messages(query).await.expect("search").hits.into_iter().map(|h| h.id).collect()
}

/// Every hit of a query, page by page.
async fn all_pages(s: &Adapter, mut query: SearchQuery, groups: bool) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let page = if groups { s.search_groups(query.clone()).await } else { s.search_messages(query.clone()).await }
            .expect("search");
        assert!(page.hits.len() <= query.limit);
        out.extend(page.hits.iter().map(|h| h.id.clone()));
        match page.next {
            Some(a) => query.after = Some(a),
            None => return out,
        }
    }
}

pub async fn cjk_text_matches_by_substring(s: Adapter) {
    let c = unique("s_cjk");
    index(
        &s,
        vec![
            msg(&c, 1, 1, "欢迎使用表格存储服务"),
            msg(&c, 2, 2, "東京タワーに行きました"),
            msg(&c, 3, 3, "한국어 검색 엔진을 만들었다"),
            msg(&c, 4, 4, "我们用Rust写IM服务"),
            msg(&c, 5, 5, "存储表格"),
        ],
    )
    .await;
    let id = |n: i64| format!("{c}/{n}");
    assert_eq!(ids(&s, q("表格存储", &[&c])).await, vec![id(1)], "a substring of a Chinese sentence");
    assert_eq!(ids(&s, q("存储", &[&c])).await, vec![id(5), id(1)]);
    assert_eq!(ids(&s, q("タワー", &[&c])).await, vec![id(2)], "Japanese katakana inside a sentence");
    assert_eq!(ids(&s, q("行き", &[&c])).await, vec![id(2)]);
    assert_eq!(ids(&s, q("검색", &[&c])).await, vec![id(3)], "Korean inside a word");
    assert_eq!(ids(&s, q("엔진을", &[&c])).await, vec![id(3)]);
    assert_eq!(ids(&s, q("rust写im", &[&c])).await, vec![id(4)], "mixed CJK and Latin, any case");
    assert_eq!(ids(&s, q("RUST", &[&c])).await, vec![id(4)]);
    assert!(ids(&s, q("格表", &[&c])).await.is_empty(), "characters in another order are not the phrase");
    assert!(ids(&s, q("服务表格", &[&c])).await.is_empty());
}

pub async fn latin_text_matches_whole_words_case_insensitively(s: Adapter) {
    let c = unique("s_en");
    index(
        &s,
        vec![
            msg(&c, 1, 1, "Hello, World! Meet me at 3.14 o'clock."),
            msg(&c, 2, 2, "world hello"),
            msg(&c, 3, 3, "HELLO WORLDS"),
        ],
    )
    .await;
    let id = |n: i64| format!("{c}/{n}");
    assert_eq!(
        ids(&s, q("hello world", &[&c])).await,
        vec![id(3), id(1)],
        "a phrase, in order, across punctuation (the last word also as the start of \"worlds\")"
    );
    assert_eq!(ids(&s, q("hello worlds", &[&c])).await, vec![id(3)]);
    assert_eq!(ids(&s, q("HELLO", &[&c])).await, vec![id(3), id(2), id(1)]);
    assert!(ids(&s, q("wor hello", &[&c])).await.is_empty(), "no partial words but the last");
    assert!(ids(&s, q("ello", &[&c])).await.is_empty(), "a prefix, not any part of a word");
    assert_eq!(ids(&s, q("3.14", &[&c])).await, vec![id(1)]);
    assert_eq!(ids(&s, q("o'clock", &[&c])).await, vec![id(1)]);
    assert_eq!(ids(&s, q("world!!", &[&c])).await, vec![id(3), id(2), id(1)], "punctuation in the query is ignored");
    assert!(ids(&s, q("?!", &[&c])).await.is_empty(), "a query without words finds nothing");
}

/// Search as you type: the words before the last are whole words, the last one is the start of
/// a word, at most `MAX_PREFIX_EXPANSIONS` words of the index.
pub async fn the_last_word_matches_as_the_start_of_a_word(s: Adapter) {
    let c = unique("s_prefix");
    index(
        &s,
        vec![
            msg(&c, 1, 1, "the quartzite sample arrived"),
            msg(&c, 2, 2, "Sample arrangement for Friday"),
            msg(&c, 3, 3, "just a sample"),
            msg(&c, 4, 4, "arrived: one sample"),
            msg(&c, 5, 5, "Rustaceans, unite"),
            msg(&c, 6, 6, "表格存储 sample"),
        ],
    )
    .await;
    let id = |n: i64| format!("{c}/{n}");
    assert_eq!(ids(&s, q("sample arr", &[&c])).await, vec![id(2), id(1)]);
    assert_eq!(ids(&s, q("sample arrived", &[&c])).await, vec![id(1)], "a whole last word is its own prefix");
    assert_eq!(ids(&s, q("sample arrivedx", &[&c])).await, Vec::<String>::new());
    assert!(ids(&s, q("sam arr", &[&c])).await.is_empty(), "only the last word is a prefix");
    assert_eq!(ids(&s, q("arrived one sam", &[&c])).await, vec![id(4)]);
    assert_eq!(ids(&s, q("RUST", &[&c])).await, vec![id(5)], "a single word, any case");
    assert_eq!(ids(&s, q("r", &[&c])).await, vec![id(5)], "one letter is a prefix too");
    assert_eq!(ids(&s, q("存储 sam", &[&c])).await, vec![id(6)], "after CJK characters");
    assert_eq!(ids(&s, q("表格存", &[&c])).await, vec![id(6)], "CJK still by substring");

    // 60 words with one start: the last word stands for the first 50 of them.
    let tag = unique("x").replace('-', "");
    let e = unique("s_expand");
    index(&s, (0..60).map(|n| msg(&e, n + 1, n + 1, &format!("{tag}w{n:02}"))).collect()).await;
    let expanded = ids(&s, q(&format!("{tag}w"), &[&e])).await;
    assert_eq!(expanded.len(), 50, "at most MAX_PREFIX_EXPANSIONS words: {expanded:?}");
    assert_eq!(im_shared::search::MAX_PREFIX_EXPANSIONS, 50);
    assert_eq!(ids(&s, q(&format!("{tag}w59"), &[&e])).await, vec![format!("{e}/60")], "each word is still found");
}

pub async fn hits_come_newest_first_and_page_without_loss_or_repeat(s: Adapter) {
    let c = unique("s_page");
    // 30 messages, many sharing a time: the order must still be total.
    let docs: Vec<Doc> = (1..=30).map(|n| msg(&c, n, 1000 + n / 4, &format!("ping number {n}"))).collect();
    index(&s, docs).await;
    let full = ids(&s, q("ping", &[&c])).await;
    assert_eq!(full.len(), 30);
    let times: Vec<i64> =
        full.iter().map(|id| 1000 + id.rsplit('/').next().unwrap().parse::<i64>().unwrap() / 4).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    for limit in [1, 4, 7, 30] {
        let paged = all_pages(&s, SearchQuery { limit, ..q("ping", &[&c]) }, false).await;
        assert_eq!(paged, full, "pages of {limit} give the same hits in the same order");
    }
    let last = s.search_messages(SearchQuery { limit: 30, ..q("ping", &[&c]) }).await.unwrap();
    assert_eq!(last.next, None, "a page that ends the results has no cursor");
    let past_all = SearchQuery { after: Some(After { time: i64::MIN, tiebreak: 0 }), ..q("ping", &[&c]) };
    assert!(s.search_messages(past_all).await.unwrap().hits.is_empty());
}

pub async fn only_the_given_conversations_are_searched(s: Adapter) {
    let (a, b, c) = (unique("s_a"), unique("g_b"), unique("g_c"));
    index(&s, vec![msg(&a, 1, 1, "secret plan"), msg(&b, 1, 2, "secret plan"), msg(&c, 1, 3, "secret plan")]).await;
    assert_eq!(ids(&s, q("secret plan", &[&a, &c])).await, vec![format!("{c}/1"), format!("{a}/1")]);
    assert!(ids(&s, q("secret plan", &[])).await.is_empty(), "no conversations, no hits");
    // A user in thousands of conversations still gets full pages.
    let mut many: Vec<String> = (0..4000).map(|i| format!("g_other{i}")).collect();
    many.push(b.clone());
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(ids(&s, q("secret", &refs)).await, vec![format!("{b}/1")]);
}

pub async fn reindexing_replaces_and_never_duplicates(s: Adapter) {
    let c = unique("s_re");
    index(&s, vec![msg(&c, 1, 1, "first words")]).await;
    index(&s, vec![msg(&c, 1, 1, "first words")]).await;
    index(&s, vec![msg(&c, 1, 1, "first words"), msg(&c, 1, 1, "first words")]).await;
    assert_eq!(ids(&s, q("first", &[&c])).await.len(), 1, "one hit however often it was indexed");
    index(&s, vec![msg(&c, 1, 1, "second words")]).await;
    assert!(ids(&s, q("first", &[&c])).await.is_empty(), "the old text is gone");
    assert_eq!(ids(&s, q("second words", &[&c])).await.len(), 1);
}

/// Staged documents are found once committed: new ones once each, and a replacement instead of
/// what it replaces, also when both are staged before one commit. An `index` in between
/// commits what was staged too.
pub async fn staged_documents_are_found_once_committed(s: Adapter) {
    let c = unique("s_stage");
    let stage = |docs: Vec<(Doc, bool)>| {
        let n = docs.len();
        let s = s.clone();
        async move {
            let staged = docs.into_iter().map(|(doc, new)| StagedDoc { doc, new }).collect();
            assert_eq!(s.stage(staged).await.expect("stage"), vec![None; n], "every document staged");
        }
    };
    stage(vec![(msg(&c, 1, 1, "apple one"), true), (msg(&c, 2, 2, "apple two"), true)]).await;
    stage(vec![(msg(&c, 1, 1, "pear one"), false)]).await;
    s.commit().await.expect("commit");
    assert_eq!(ids(&s, q("apple", &[&c])).await, vec![format!("{c}/2")], "the replaced text is gone");
    assert_eq!(ids(&s, q("pear", &[&c])).await, vec![format!("{c}/1")]);
    stage(vec![(msg(&c, 3, 3, "apple three"), true)]).await;
    index(&s, vec![msg(&c, 2, 2, "plum two")]).await;
    assert_eq!(ids(&s, q("apple", &[&c])).await, vec![format!("{c}/3")], "index commits the staged one too");
    s.commit().await.expect("a commit with nothing staged");
    assert_eq!(ids(&s, q("plum", &[&c])).await, vec![format!("{c}/2")]);
}

pub async fn groups_are_found_by_name_newest_first(s: Adapter) {
    let tag = unique("grp").replace('-', "");
    let g = |n: usize| format!("g_{tag}{n}");
    let doc = |n: usize, name: &str| Doc::Group(GroupDoc { group_id: g(n), name: name.into(), created_at: n as i64 });
    index(
        &s,
        vec![
            doc(1, &format!("{tag} Rust 爱好者")),
            doc(2, &format!("{tag} rust-lang CN")),
            doc(3, &format!("{tag} Go fans")),
        ],
    )
    .await;
    let groups = |phrase: String| {
        let s = s.clone();
        async move { all_pages(&s, SearchQuery { limit: 1, ..q(&phrase, &[]) }, true).await }
    };
    assert_eq!(groups(format!("{tag} rust")).await, vec![g(2), g(1)]);
    assert_eq!(groups("爱好".into()).await.into_iter().filter(|id| id.contains(&tag)).collect::<Vec<_>>(), vec![g(1)]);
    index(&s, vec![doc(3, &format!("{tag} Rust now"))]).await;
    assert_eq!(groups(format!("{tag} rust")).await, vec![g(3), g(2), g(1)], "a rename is found by its new name");
    assert!(groups(format!("{tag} go fans")).await.is_empty(), "and no longer by the old one");
}

pub async fn clear_removes_everything(s: Adapter) {
    let c = unique("s_clear");
    index(
        &s,
        vec![
            msg(&c, 1, 1, "to be cleared"),
            Doc::Group(GroupDoc {
                group_id: format!("g_{}", c.replace('-', "")),
                name: "cleared".into(),
                created_at: 1,
            }),
        ],
    )
    .await;
    s.clear().await.unwrap();
    assert!(ids(&s, q("cleared", &[&c])).await.is_empty());
    assert!(s.search_groups(q("cleared", &[])).await.unwrap().hits.is_empty());
}

#[macro_export]
macro_rules! search_conformance {
    (optional $factory:path) => {
        $crate::search_conformance!(@cases [optional], $factory);
    };
    ($factory:path) => {
        $crate::search_conformance!(@cases [], $factory);
    };
    (@cases [$($optional:ident)?], $factory:path) => {
        $crate::conformance_tests!(
            $($optional)? conformance::search,
            $factory,
            [
                cjk_text_matches_by_substring,
                latin_text_matches_whole_words_case_insensitively,
                the_last_word_matches_as_the_start_of_a_word,
                hits_come_newest_first_and_page_without_loss_or_repeat,
                only_the_given_conversations_are_searched,
                reindexing_replaces_and_never_duplicates,
                staged_documents_are_found_once_committed,
                groups_are_found_by_name_newest_first,
                clear_removes_everything,
            ]
        );
    };
}
