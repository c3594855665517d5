//! Membership changes without an origin stampede: a key's new owner first asks the key's
//! previous owner, which answers from memory.

mod common;

use common::{owner_index, value_of, Node, TestGetter};

async fn node(getter: &TestGetter, handoff: bool) -> Node {
    Node::start_with(getter.clone(), |b| {
        if handoff {
            b
        } else {
            b.handoff_window(std::time::Duration::ZERO)
        }
    })
    .await
}

/// Two nodes warm 200 keys, a third joins, every key is read at the newcomer (and 100 new
/// ones, which it loads itself), then the newcomer leaves (still serving, as in its grace
/// period) and every key is read again. Returns the getter calls after warming, after the
/// join and after the leave, and how many of the warm keys and of the new ones the newcomer
/// owned.
async fn join_and_leave(handoff: bool) -> (usize, usize, usize, (usize, usize), Vec<Node>) {
    let getter = TestGetter::default();
    let mut nodes = vec![node(&getter, handoff).await, node(&getter, handoff).await];
    let two: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    for n in &nodes {
        n.cache.set_peers(&two).unwrap();
    }
    let keys: Vec<String> = (0..200).map(|i| format!("h{i}")).collect();
    for k in &keys {
        assert_eq!(nodes[0].group.get(k).await.unwrap(), value_of(k));
    }
    let warm = getter.total();
    // The newcomer follows the registry before it registers: its first list lacks itself.
    nodes.push(node(&getter, handoff).await);
    nodes[2].cache.set_peers(&two).unwrap();
    let three: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    for n in &nodes {
        n.cache.set_peers(&three).unwrap();
    }
    let fresh: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    for k in keys.iter().chain(&fresh) {
        assert_eq!(nodes[2].group.get(k).await.unwrap(), value_of(k));
    }
    let joined = getter.total();
    let owned = |ks: &[String]| ks.iter().filter(|k| owner_index(&nodes, k) == 2).count();
    let (moved, theirs) = (owned(&keys), owned(&fresh));
    for n in &nodes[..2] {
        n.cache.set_peers(&two).unwrap();
    }
    for k in keys.iter().chain(&fresh) {
        assert_eq!(nodes[1].group.get(k).await.unwrap(), value_of(k));
    }
    (warm, joined, getter.total(), (moved, theirs), nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_move_to_a_new_owner_and_back_without_the_origin() {
    let (warm, joined, left, (moved, theirs), nodes) = join_and_leave(true).await;
    assert_eq!(warm, 200);
    assert!(moved > 20 && theirs > 10, "{moved} {theirs}");
    assert_eq!(
        joined, 300,
        "the newcomer took every moved key from its previous owner"
    );
    assert_eq!(nodes[2].group.stats().handoff_loads, moved as u64);
    assert_eq!(left, 300, "and gave its own back on leaving");
    let back: u64 = nodes[..2]
        .iter()
        .map(|n| n.group.stats().handoff_loads)
        .sum();
    assert_eq!(back, theirs as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_handoff_moved_keys_are_loaded_again() {
    let (warm, joined, left, (moved, theirs), nodes) = join_and_leave(false).await;
    assert_eq!(warm, 200);
    assert_eq!(joined, 300 + moved);
    // Going back, the old owners still hold the keys they had before the join, and load
    // the newcomer's.
    assert_eq!(left, 300 + moved + theirs);
    assert!(nodes.iter().all(|n| n.group.stats().handoff_loads == 0));
}

/// A rolling restart changes the ring twice per node, and the next node leaves as soon as
/// the last one is back: a node that rejoined must still reach the owner its keys had before
/// it joined after that next change, and a key held only as a hot copy is handed over too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoined_node_hands_off_after_the_next_change_too() {
    let getter = TestGetter::default();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&getter, true).await);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let (zero_and_two, zero_and_one) = (
        vec![urls[0].clone(), urls[2].clone()],
        vec![urls[0].clone(), urls[1].clone()],
    );
    // Node 1 restarts: its replacement's first list is [0, 2] (no handoff from it), the
    // cluster holds the keys on 0 and 2 meanwhile.
    for n in [&nodes[0], &nodes[2]] {
        n.cache.set_peers(&zero_and_two).unwrap();
    }
    nodes[1].cache.set_peers(&zero_and_two).unwrap();
    let keys: Vec<String> = (0..150).map(|i| format!("r{i}")).collect();
    for k in &keys {
        assert_eq!(nodes[0].group.get(k).await.unwrap(), value_of(k));
    }
    assert_eq!(getter.total(), 150);
    // Node 1 is back ...
    for n in &nodes {
        n.cache.set_peers(&urls).unwrap();
    }
    // ... and node 2 leaves at once (it keeps serving through its linger): two changes.
    for n in [&nodes[0], &nodes[1]] {
        n.cache.set_peers(&zero_and_one).unwrap();
    }
    // Every key, through node 1: the keys that were node 1's before it restarted come
    // from the owner they had while it was away (0 or 2), two ring changes ago.
    for k in &keys {
        assert_eq!(nodes[1].group.get(k).await.unwrap(), value_of(k));
    }
    assert_eq!(getter.total(), 150, "no key loaded twice");
}

/// A node that left the ring hands its keys to their new owners before it stops: they are
/// there without anyone asking for them, and no key is loaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_its_keys_over() {
    let getter = TestGetter::default();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&getter, true).await);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    for n in &nodes {
        n.cache.set_peers(&urls).unwrap();
    }
    let keys: Vec<String> = (0..150).map(|i| format!("o{i}")).collect();
    for k in &keys {
        nodes[0].group.get(k).await.unwrap();
    }
    let owned_by_2 = keys.iter().filter(|k| owner_index(&nodes, k) == 2).count();
    assert!(owned_by_2 > 10, "{owned_by_2}");
    // Node 2 leaves: every ring (its own too) drops it, then it hands over.
    let two = vec![urls[0].clone(), urls[1].clone()];
    for n in &nodes {
        n.cache.set_peers(&two).unwrap();
    }
    assert_eq!(nodes[2].cache.hand_over().await, owned_by_2);
    // Stop node 2 entirely: nobody can ask it any more.
    nodes[2].stop_server().await;
    for k in &keys {
        assert_eq!(nodes[1].group.get(k).await.unwrap(), value_of(k));
    }
    assert_eq!(getter.total(), 150, "no key loaded again");
}
