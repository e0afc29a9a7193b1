//! The simulated source: segments in memory that grow over time.
//!
//! All bytes live in one buffer (positions start at 0); segments are ranges
//! of it. The newest segment is unsealed and grows; rolling starts a new one
//! at the current end, which seals the previous (a later segment exists).
use bytes::Bytes;
use walship_core::sender::{Cursor, ResumeCheck, ResumeRequest, SegmentView};
use walship_core::{Position, SegmentName};

use crate::rng::Rng;

/// One source segment.
#[derive(Debug, Clone)]
pub struct SrcSeg {
    pub name: SegmentName,
    pub start: Position,
    pub end: Position,
    pub sealed: bool,
}

/// Segments in memory.
#[derive(Debug, Default)]
pub struct Source {
    pub segs: Vec<SrcSeg>,
    pub data: Vec<u8>,
}

impl Source {
    /// End of the bytes written so far.
    pub fn end(&self) -> Position {
        Position(self.data.len() as u64)
    }

    /// Seals the current segment and starts a new, empty one at the end.
    pub fn roll(&mut self) {
        if let Some(last) = self.segs.last_mut() {
            last.sealed = true;
        }
        let name = SegmentName::new(&format!("{:08X}", self.segs.len() + 1)).expect("generated names are plain");
        self.segs.push(SrcSeg { name, start: self.end(), end: self.end(), sealed: false });
    }

    /// Appends `len` random bytes to the current segment (starting one if none).
    pub fn append(&mut self, rng: &mut Rng, len: usize) {
        if self.segs.is_empty() {
            self.roll();
        }
        rng.extend_bytes(&mut self.data, len);
        let end = self.end();
        if let Some(last) = self.segs.last_mut() {
            last.end = end;
        }
    }

    /// The view of the segment a cursor names, as the agent's tailer gives it.
    pub fn view_for(&self, cursor: &Cursor) -> Option<SegmentView<'_>> {
        let s = match cursor {
            Cursor::In(name) => self.segs.iter().find(|s| &s.name == name),
            Cursor::After { after: None, .. } => self.segs.first(),
            Cursor::After { after: Some(a), .. } => self.segs.iter().find(|s| &s.name > a),
        }?;
        Some(SegmentView { name: &s.name, start: s.start, end: s.end, sealed: s.sealed })
    }

    /// The bytes `[pos, pos + len)`.
    pub fn read(&self, pos: Position, len: u32) -> Result<Bytes, String> {
        let (a, b) = (pos.get() as usize, pos.get() as usize + len as usize);
        self.data
            .get(a..b)
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| format!("sender asked for source bytes {a}..{b} beyond the end {}", self.data.len()))
    }

    /// The agent's resume check (`resolve_resume`), minus rebasing: this
    /// source never re-anchors positions and never removes segments.
    pub fn resume_check(&self, req: &ResumeRequest) -> ResumeCheck {
        let Some(seg) = &req.segment else { return ResumeCheck::Unverifiable };
        let Some(info) = self.segs.iter().find(|s| s.name == seg.name) else {
            return ResumeCheck::Gone(format!("segment {} is not in the source", seg.name));
        };
        if info.start != seg.start {
            return ResumeCheck::Diverged(format!(
                "segment {} starts at {} on the mirror but at {} in the source",
                seg.name, seg.start, info.start
            ));
        }
        if req.durable_pos > info.end {
            return ResumeCheck::Diverged(format!(
                "the mirror is durable to {} but segment {} ends at {}",
                req.durable_pos, seg.name, info.end
            ));
        }
        match self.data.get(req.check_start.get() as usize..req.durable_pos.get() as usize) {
            Some(b) => ResumeCheck::Crc(crc32fast::hash(b)),
            None => {
                ResumeCheck::Gone(format!("check range {}..{} is not in the source", req.check_start, req.durable_pos))
            }
        }
    }
}
