//! The RouteConfigurations of the last translation kept as ordered lists of encoded
//! routes, so that a change of a few Mappings moves and re-encodes a few routes
//! (issue 4).
//!
//! Each virtual host holds its group routes in Emissary's order, each with its order key
//! ([`route::OrderKey`], total: it ends with the primary Mapping's namespace and name).
//! A changed group leaves every virtual host it attached to by a binary search for its
//! old key and enters at the place of its new key, by the same comparator the whole
//! translation sorts with, so the lists stay exactly what sorting would give. Then only
//! the virtual hosts that changed are encoded again, and their RouteConfigurations
//! assembled from the virtual hosts' bytes (a protobuf message is the concatenation of
//! its fields; see `incremental`).

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, RouteConfiguration, VirtualHost};
use prost::Message;

use super::incremental::length_delimited;
use super::route::{Group, OrderKey, Rank};
use super::vhost::{self, Attachment, RouteSlot, VirtualHostLayout};

/// Every RouteConfiguration, one per listener, in listener-plan order.
#[derive(Debug, Default)]
pub(super) struct Routes {
    configs: Vec<RouteConfig>,
    /// Set when the layouts it was built from did not agree with the attachments (a
    /// bug): it still encodes what it was given, but takes no change.
    broken: bool,
    buffers: Buffers,
}

/// The RouteConfiguration buffers handed out to snapshots, to write later ones into
/// once no snapshot holds them. A RouteConfiguration of 10k Mappings is 4.4 MB, and a
/// fresh buffer that size costs a page fault per 4 KiB page as it is written: ~14 ms on
/// the benchmark machine, more than the rest of a one-file revision. A snapshot
/// history keeps the last few; the one that leaves it frees a buffer for the next.
#[derive(Debug, Default)]
pub(super) struct Buffers {
    /// Oldest first.
    handed_out: VecDeque<Bytes>,
    spare: Vec<BytesMut>,
}

/// More than any snapshot history keeps (`snapshot::StoreConfig::history`); a buffer
/// older than that is left to its last holder.
const MAX_HANDED_OUT: usize = 256;
/// Free buffers kept: one per RouteConfiguration a revision changes, usually one.
const MAX_SPARE: usize = 2;

impl Buffers {
    /// An empty buffer of at least `len` bytes, recycled when one is free.
    fn take(&mut self, len: usize) -> BytesMut {
        for _ in 0..self.handed_out.len() {
            let Some(bytes) = self.handed_out.pop_front() else {
                break;
            };
            match bytes.try_into_mut() {
                Ok(mut free) => {
                    if self.spare.len() < MAX_SPARE {
                        free.clear();
                        self.spare.push(free);
                    }
                }
                Err(held) => self.handed_out.push_back(held),
            }
        }
        match self.spare.iter().position(|s| s.capacity() >= len) {
            Some(at) => self.spare.swap_remove(at),
            // Headroom: the next revision's routes are a little longer or shorter.
            None => BytesMut::with_capacity(len + len / 16),
        }
    }

    fn hand_out(&mut self, buffer: BytesMut) -> Bytes {
        let bytes = buffer.freeze();
        self.handed_out.push_back(bytes.clone());
        if self.handed_out.len() > MAX_HANDED_OUT {
            self.handed_out.pop_front();
        }
        bytes
    }
}

#[derive(Debug)]
struct RouteConfig {
    name: String,
    /// The encoding before the virtual hosts (`name`) and after them.
    head: Vec<u8>,
    tail: Vec<u8>,
    vhosts: Vec<Vhost>,
    body: Bytes,
}

#[derive(Debug)]
struct Vhost {
    /// `None`: it takes no Mapping routes.
    attachment: Option<Attachment>,
    head: Vec<u8>,
    tail: Vec<u8>,
    /// The group routes, in Emissary's order.
    slots: Vec<Slot>,
    /// The virtual host's own routes after them (the insecure 404).
    fixed: Vec<Bytes>,
    body: Bytes,
    changed: bool,
}

#[derive(Debug)]
struct Slot {
    key: Key,
    route: Bytes,
}

/// An [`OrderKey`] that owns its text, shared by the slots of one group.
#[derive(Debug, Clone)]
pub(super) struct Key {
    rank: Rank,
    text: Arc<(String, String, String)>,
}

impl Key {
    /// `key`, owning its text; `text` is the group's shared copy when it has one.
    pub(super) fn new(key: &OrderKey<'_>, text: &mut Option<Arc<(String, String, String)>>) -> Key {
        let text = text
            .get_or_insert_with(|| Arc::new((key.6.to_owned(), key.7.to_owned(), key.8.to_owned())))
            .clone();
        Key {
            rank: (key.0, key.1, key.2, key.3, key.4, key.5),
            text,
        }
    }

    fn cmp_to(&self, key: &OrderKey<'_>) -> Ordering {
        let (a, b, c, d, e, f) = self.rank;
        let (p, ns, name) = &*self.text;
        (a, b, c, d, e, f, p.as_str(), ns.as_str(), name.as_str()).cmp(key)
    }
}

/// The route of a group as one virtual host places it, encoded.
pub(super) type RouteBytes<'f> = dyn FnMut(usize, &[HeaderMatcher]) -> Bytes + 'f;

/// Why a change could not be applied: the lists do not hold what the change says they
/// hold (the caller builds everything again instead).
#[derive(Debug)]
pub(super) struct Mismatch;

impl Routes {
    /// The lists of one whole translation: per listener, the RouteConfiguration's shell
    /// and virtual-host layouts (as `vhost::route_configuration_layout` gives them) and
    /// each virtual host's attachment; `route(index, headers)` is group `index`'s
    /// encoding in a virtual host that appends `headers`.
    pub(super) fn new(
        configs: Vec<(
            RouteConfiguration,
            Vec<VirtualHostLayout>,
            Vec<Option<Attachment>>,
        )>,
        groups: &[Group<'_>],
        route: &mut RouteBytes<'_>,
        mut buffers: Buffers,
    ) -> Routes {
        let mut texts: Vec<Option<Arc<(String, String, String)>>> = vec![None; groups.len()];
        let mut out = Vec::with_capacity(configs.len());
        let mut broken = false;
        for (shell, layouts, mut attachments) in configs {
            if layouts.len() != attachments.len() {
                broken = true;
                attachments.resize(layouts.len(), None);
            }
            let mut vhosts = Vec::with_capacity(layouts.len());
            for (layout, attachment) in layouts.into_iter().zip(attachments) {
                let (head, tail) = vhost_shell(layout.shell);
                let mut slots = Vec::new();
                let mut fixed = Vec::new();
                for slot in layout.routes {
                    match slot {
                        RouteSlot::Group { index, headers } => {
                            let key = attachment
                                .as_ref()
                                .and_then(|at| vhost::slot(&groups[index], &at.pattern, &at.extra));
                            let key = match key {
                                Some((key, _)) => key,
                                None => {
                                    broken = true;
                                    groups[index].order_key(0)
                                }
                            };
                            slots.push(Slot {
                                key: Key::new(&key, &mut texts[index]),
                                route: route(index, &headers),
                            });
                        }
                        RouteSlot::Fixed(r) => fixed.push(Bytes::from(r.encode_to_vec())),
                    }
                }
                let mut vhost = Vhost {
                    attachment,
                    head,
                    tail,
                    slots,
                    fixed,
                    body: Bytes::new(),
                    changed: true,
                };
                vhost.encode();
                vhosts.push(vhost);
            }
            let (name, head, tail) = config_shell(shell);
            let mut config = RouteConfig {
                name,
                head,
                tail,
                vhosts,
                body: Bytes::new(),
            };
            config.encode(&mut buffers);
            out.push(config);
        }
        Routes {
            configs: out,
            broken,
            buffers,
        }
    }

    /// The buffers, for the next [`Routes::new`].
    pub(super) fn take_buffers(&mut self) -> Buffers {
        std::mem::take(&mut self.buffers)
    }

    /// Whether the virtual hosts take routes as `attachments` says, listener by
    /// listener: what the kept lists were built for.
    pub(super) fn same_attachments(&self, attachments: &[Vec<Option<Attachment>>]) -> bool {
        self.configs.len() == attachments.len()
            && self.configs.iter().zip(attachments).all(|(c, a)| {
                c.vhosts.len() == a.len() && c.vhosts.iter().zip(a).all(|(v, a)| v.attachment == *a)
            })
    }

    /// Takes the routes of `old` (groups that were translated) out of every virtual
    /// host and puts those of `new` in, at their places; `route(index, headers)` is
    /// `new[index]`'s encoding in a virtual host that appends `headers`. Then encodes
    /// again what changed.
    ///
    /// # Errors
    ///
    /// [`Mismatch`] when an old route is not where its key says, or a new one's place
    /// is taken; the lists are then half changed and must be built again.
    pub(super) fn apply(
        &mut self,
        old: &[Group<'_>],
        new: &[Group<'_>],
        route: &mut RouteBytes<'_>,
    ) -> Result<(), Mismatch> {
        if self.broken {
            return Err(Mismatch);
        }
        let mut texts: Vec<Option<Arc<(String, String, String)>>> = vec![None; new.len()];
        for config in &mut self.configs {
            for vhost in &mut config.vhosts {
                let Some(at) = &vhost.attachment else {
                    continue;
                };
                for group in old {
                    let Some((key, _)) = vhost::slot(group, &at.pattern, &at.extra) else {
                        continue;
                    };
                    let place = vhost
                        .slots
                        .binary_search_by(|s| s.key.cmp_to(&key))
                        .map_err(|_| Mismatch)?;
                    vhost.slots.remove(place);
                    vhost.changed = true;
                }
                for (index, group) in new.iter().enumerate() {
                    let Some((key, headers)) = vhost::slot(group, &at.pattern, &at.extra) else {
                        continue;
                    };
                    let Err(place) = vhost.slots.binary_search_by(|s| s.key.cmp_to(&key)) else {
                        return Err(Mismatch);
                    };
                    let slot = Slot {
                        key: Key::new(&key, &mut texts[index]),
                        route: route(index, &headers),
                    };
                    vhost.slots.insert(place, slot);
                    vhost.changed = true;
                }
            }
        }
        for config in &mut self.configs {
            if config.vhosts.iter().any(|v| v.changed) {
                for vhost in &mut config.vhosts {
                    vhost.encode();
                }
                config.encode(&mut self.buffers);
            }
        }
        Ok(())
    }

    /// Every RouteConfiguration, encoded: (name, bytes), in listener-plan order.
    pub(super) fn encoded(&self) -> impl Iterator<Item = (String, Bytes)> + '_ {
        self.configs
            .iter()
            .map(|c| (c.name.clone(), c.body.clone()))
    }
}

impl Vhost {
    /// Encodes the virtual host again when its routes changed.
    fn encode(&mut self) {
        if !self.changed {
            return;
        }
        let routes = self.slots.iter().map(|s| &s.route).chain(&self.fixed);
        let len: usize = routes.clone().map(|r| r.len() + 8).sum();
        let mut out = BytesMut::with_capacity(self.head.len() + len + self.tail.len());
        out.put_slice(&self.head);
        for route in routes {
            length_delimited(3, route, &mut out);
        }
        out.put_slice(&self.tail);
        self.body = out.freeze();
        self.changed = false;
    }
}

impl RouteConfig {
    fn encode(&mut self, buffers: &mut Buffers) {
        let len: usize = self.vhosts.iter().map(|v| v.body.len() + 8).sum();
        let mut out = buffers.take(self.head.len() + len + self.tail.len());
        out.put_slice(&self.head);
        for vhost in &self.vhosts {
            length_delimited(2, &vhost.body, &mut out);
        }
        out.put_slice(&self.tail);
        self.body = buffers.hand_out(out);
    }
}

/// A virtual host's encoding before its routes and after them: prost writes `name` (1)
/// and `domains` (2), then `routes` (3), then the rest.
pub(super) fn vhost_shell(shell: VirtualHost) -> (Vec<u8>, Vec<u8>) {
    let head = VirtualHost {
        name: shell.name.clone(),
        domains: shell.domains.clone(),
        ..Default::default()
    };
    let tail = VirtualHost {
        name: String::new(),
        domains: Vec::new(),
        routes: Vec::new(),
        ..shell
    };
    (head.encode_to_vec(), tail.encode_to_vec())
}

/// A RouteConfiguration's name and its encoding before its virtual hosts and after
/// them: `name` (1) is the only field prost writes before `virtual_hosts` (2).
pub(super) fn config_shell(shell: RouteConfiguration) -> (String, Vec<u8>, Vec<u8>) {
    let head = RouteConfiguration {
        name: shell.name.clone(),
        ..Default::default()
    };
    let tail = RouteConfiguration {
        name: String::new(),
        virtual_hosts: Vec::new(),
        ..shell
    };
    (
        head.name.clone(),
        head.encode_to_vec(),
        tail.encode_to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_written_again_only_once_no_snapshot_holds_it() {
        let mut buffers = Buffers::default();
        let mut first = buffers.take(1000);
        first.put_slice(b"first");
        let first = buffers.hand_out(first);
        let address = first.as_ptr();
        // A snapshot still holds it: the next one gets another buffer.
        let second = buffers.take(1000);
        assert_ne!(second.as_ptr(), address);
        assert!(second.capacity() >= 1000);
        let _second = buffers.hand_out(second);
        // The snapshot is gone: its buffer comes back, empty.
        drop(first);
        let third = buffers.take(1000);
        assert_eq!(third.as_ptr(), address);
        assert!(third.is_empty());
        // Too small for what is asked: a fresh one.
        let _third = buffers.hand_out(third);
        assert!(buffers.take(1 << 20).capacity() >= 1 << 20);
    }
}
