//! The memory-based API's pieces: what a checkpoint saves ([`Data`]), where
//! a restart puts it back ([`Slot`]), and the image of one rank's data
//! (`memory.bin` among the rank's checkpoint files).

use bytemuck::Pod;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::error::{Error, Result};
use crate::dsm::{Distribution, GlobalVec, Layout};

/// One piece of a rank's state, to save ([`super::Ckpt::checkpoint`]).
///
/// Pieces are matched to [`Slot`]s by position: recover with the same list,
/// in the same order.
#[derive(Debug)]
pub struct Data<'a>(Item<'a>);

#[derive(Debug)]
enum Item<'a> {
    Bytes(&'a [u8]),
    Value(std::result::Result<Vec<u8>, String>),
    Global { bytes: &'a [u8], layout: Layout },
}

impl<'a> Data<'a> {
    /// A slice of plain data (this rank's; restores onto the same rank count).
    pub fn slice<T: Pod>(s: &'a [T]) -> Data<'a> {
        Data(Item::Bytes(bytemuck::cast_slice(s)))
    }

    /// A serde value (this rank's; restores onto the same rank count).
    pub fn value<T: Serialize>(v: &T) -> Data<'a> {
        Data(Item::Value(
            postcard::to_stdvec(v).map_err(|e| e.to_string()),
        ))
    }

    /// This rank's part of a global array (restores onto any rank count,
    /// redistributed).
    pub fn global<T: Pod>(v: &'a mut GlobalVec<T>) -> Data<'a> {
        let layout = *v.layout();
        Data(Item::Global {
            bytes: bytemuck::cast_slice(v.local_mut()),
            layout,
        })
    }
}

/// Where a restart puts a saved piece back ([`super::Ckpt::recover`]).
pub struct Slot<'a>(SlotItem<'a>);

type Put<'a> = Box<dyn FnMut(usize, &[u8]) -> crate::Result<()> + 'a>;
type Take<'a> = Box<dyn FnMut(&[u8]) -> Result<()> + 'a>;

enum SlotItem<'a> {
    Bytes(&'a mut [u8]),
    Value(Take<'a>),
    Global {
        len: usize,
        elem: usize,
        put: Put<'a>,
        sync: Box<dyn Fn() -> crate::Result<()> + 'a>,
    },
}

impl std::fmt::Debug for Slot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            SlotItem::Bytes(_) => "Slot::slice",
            SlotItem::Value(_) => "Slot::value",
            SlotItem::Global { .. } => "Slot::global",
        })
    }
}

impl<'a> Slot<'a> {
    /// A slice of the same length as the one saved.
    pub fn slice<T: Pod>(s: &'a mut [T]) -> Slot<'a> {
        Slot(SlotItem::Bytes(bytemuck::cast_slice_mut(s)))
    }

    /// A serde value.
    pub fn value<T: DeserializeOwned>(v: &'a mut T) -> Slot<'a> {
        Slot(SlotItem::Value(Box::new(move |b| {
            *v = postcard::from_bytes(b).map_err(|e| Error::Serde(e.to_string()))?;
            Ok(())
        })))
    }

    /// A global array of the same length as the one saved, on any number of
    /// ranks and with any distribution (collective: every rank passes it).
    pub fn global<T: Pod>(v: &'a GlobalVec<T>) -> Slot<'a> {
        let elem = std::mem::size_of::<T>();
        Slot(SlotItem::Global {
            len: v.len(),
            elem,
            put: Box::new(move |g, b| v.put_range(g, &to_vec::<T>(b))),
            sync: Box::new(move || v.sync()),
        })
    }
}

/// `b` as elements of `T` (a whole number of them, checked by the caller).
fn to_vec<T: Pod>(b: &[u8]) -> Vec<T> {
    let size = std::mem::size_of::<T>().max(1);
    let mut out = vec![T::zeroed(); b.len() / size];
    let n = out.len() * std::mem::size_of::<T>();
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&b[..n]);
    out
}

/// A saved piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Saved {
    Bytes(Vec<u8>),
    Value(Vec<u8>),
    Global {
        len: u64,
        ranks: u32,
        block: u64,
        cyclic: bool,
        data: Vec<u8>,
    },
}

/// One rank's `memory.bin`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    pub rank: u32,
    pub items: Vec<Saved>,
}

/// A piece as described in the header of `memory.bin` (its bytes follow the
/// header, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Meta {
    Bytes(u64),
    Value(u64),
    Global {
        len: u64,
        ranks: u32,
        block: u64,
        cyclic: bool,
        bytes: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    rank: u32,
    items: Vec<Meta>,
}

/// The file name of the memory image among a rank's files.
pub(crate) const MEMORY: &str = "memory.bin";

/// The pieces' bytes of `memory.bin`, borrowed (they follow the
/// [`header`] in the file, in order, without being copied).
pub(crate) fn parts<'d>(data: &'d [Data<'_>]) -> Result<Vec<&'d [u8]>> {
    data.iter()
        .map(|d| match &d.0 {
            Item::Bytes(b) => Ok(*b),
            Item::Value(Ok(v)) => Ok(v.as_slice()),
            Item::Value(Err(e)) => Err(Error::Serde(e.clone())),
            Item::Global { bytes, .. } => Ok(*bytes),
        })
        .collect()
}

/// The header of `memory.bin`: its length (8 bytes LE), then the pieces'
/// descriptions (postcard).
pub(crate) fn header(rank: usize, data: &[Data<'_>]) -> Result<Vec<u8>> {
    let items = data
        .iter()
        .map(|d| {
            Ok(match &d.0 {
                Item::Bytes(b) => Meta::Bytes(b.len() as u64),
                Item::Value(Ok(v)) => Meta::Value(v.len() as u64),
                Item::Value(Err(e)) => return Err(Error::Serde(e.clone())),
                Item::Global { bytes, layout } => {
                    let (block, cyclic) = match layout.distribution() {
                        Distribution::Block => (0, false),
                        Distribution::BlockCyclic { block } => (block as u64, true),
                    };
                    Meta::Global {
                        len: layout.len() as u64,
                        ranks: layout.ranks() as u32,
                        block,
                        cyclic,
                        bytes: bytes.len() as u64,
                    }
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let h = postcard::to_stdvec(&Header {
        rank: rank as u32,
        items,
    })
    .expect("a header serializes");
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    Ok(out)
}

impl Image {
    /// Decodes a `memory.bin`.
    pub(crate) fn decode(b: &[u8]) -> Result<Image> {
        let bad = || Error::Corrupt {
            path: MEMORY.into(),
            reason: "the memory image does not decode",
        };
        let hl = b.get(..8).ok_or_else(bad)?;
        let hl = u64::from_le_bytes(hl.try_into().expect("8 bytes")) as usize;
        let hb = b
            .get(8..8usize.checked_add(hl).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        let h: Header = postcard::from_bytes(hb).map_err(|_| bad())?;
        let mut at = 8 + hl;
        let mut take = |n: u64| -> Result<Vec<u8>> {
            let end = at.checked_add(n as usize).ok_or_else(bad)?;
            let v = b.get(at..end).ok_or_else(bad)?.to_vec();
            at = end;
            Ok(v)
        };
        let items = h
            .items
            .into_iter()
            .map(|m| {
                Ok(match m {
                    Meta::Bytes(n) => Saved::Bytes(take(n)?),
                    Meta::Value(n) => Saved::Value(take(n)?),
                    Meta::Global {
                        len,
                        ranks,
                        block,
                        cyclic,
                        bytes,
                    } => Saved::Global {
                        len,
                        ranks,
                        block,
                        cyclic,
                        data: take(bytes)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if at != b.len() {
            return Err(bad());
        }
        Ok(Image {
            rank: h.rank,
            items,
        })
    }

    /// Whether the image holds per-rank pieces (slices, values).
    pub(crate) fn has_per_rank(&self) -> bool {
        self.items
            .iter()
            .any(|i| !matches!(i, Saved::Global { .. }))
    }
}

/// Checks that `slots` match the saved pieces' kinds and sizes.
pub(crate) fn check(img: &Image, slots: &[Slot<'_>], same_ranks: bool) -> Result<()> {
    if img.items.len() != slots.len() {
        return Err(Error::Shape(format!(
            "{} pieces saved, {} slots given",
            img.items.len(),
            slots.len()
        )));
    }
    for (k, (i, s)) in img.items.iter().zip(slots).enumerate() {
        match (i, &s.0) {
            (Saved::Bytes(b), SlotItem::Bytes(d)) if same_ranks => {
                if b.len() != d.len() {
                    return Err(Error::Shape(format!(
                        "piece {k}: {} bytes saved, a slice of {} bytes given",
                        b.len(),
                        d.len()
                    )));
                }
            }
            (Saved::Value(_), SlotItem::Value(_)) if same_ranks => {}
            (Saved::Global { len, data, .. }, SlotItem::Global { len: l, elem, .. }) => {
                if *len as usize != *l || data.len() % (*elem).max(1) != 0 {
                    return Err(Error::Shape(format!(
                        "piece {k}: a global array of {len} elements saved, one of {l} given"
                    )));
                }
            }
            _ => {
                return Err(Error::Shape(format!(
                    "piece {k}: another kind of data was saved"
                )))
            }
        }
    }
    Ok(())
}

/// Puts the per-rank pieces of `img` back into `slots` (checked).
pub(crate) fn restore_local(img: &Image, slots: &mut [Slot<'_>]) -> Result<()> {
    for (i, s) in img.items.iter().zip(slots.iter_mut()) {
        match (i, &mut s.0) {
            (Saved::Bytes(b), SlotItem::Bytes(d)) => d.copy_from_slice(b),
            (Saved::Value(b), SlotItem::Value(f)) => f(b)?,
            _ => {}
        }
    }
    Ok(())
}

/// Writes the global-array parts saved by rank `img.rank` into `slots`.
pub(crate) fn restore_global(img: &Image, slots: &mut [Slot<'_>]) -> Result<()> {
    for (i, s) in img.items.iter().zip(slots.iter_mut()) {
        if let (
            Saved::Global {
                len,
                ranks,
                block,
                cyclic,
                data,
            },
            SlotItem::Global { elem, put, .. },
        ) = (i, &mut s.0)
        {
            let dist = if *cyclic {
                Distribution::BlockCyclic {
                    block: *block as usize,
                }
            } else {
                Distribution::Block
            };
            let old = Layout::new(*len as usize, *ranks as usize, dist)?;
            let elem = (*elem).max(1);
            for (j, g, n) in super::redist::runs(&old, img.rank as usize) {
                let bytes = data.get(j * elem..(j + n) * elem).ok_or_else(|| {
                    Error::Shape("a saved global-array part is shorter than its layout".into())
                })?;
                put(g, bytes)?;
            }
        }
    }
    Ok(())
}

/// Completes the global arrays' writes (collective).
pub(crate) fn sync_globals(slots: &[Slot<'_>]) -> crate::Result<()> {
    for s in slots {
        if let SlotItem::Global { sync, .. } = &s.0 {
            sync()?;
        }
    }
    Ok(())
}
