//! The Modbus read planner: merges a device's properties into as few read requests as
//! possible. Pure; computed once per device config, not per poll.
//!
//! For each (unit, register kind, poll group), properties are sorted by address and merged
//! greedily: the next property joins the current request when the hole before it is at most
//! `max_gap` registers (or bits) and the request stays within `max_registers` (125) or
//! `max_bits` (2000). Overlapping properties share a request. For this constraint set the
//! greedy is optimal among plans that read runs of properties in address order (a property test
//! checks it against a dynamic program); Telegraf's `max_insert` optimisation makes the same
//! kind of plan, KubeEdge's mappers send one request per property.

use std::collections::BTreeMap;

use device_models::protocol::modbus::{ReadLimits, RegisterKind};

/// One property to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    /// Caller's index of the property (returned in [`Member::index`]).
    pub index: usize,
    /// Unit id.
    pub unit: u8,
    /// Table.
    pub kind: RegisterKind,
    /// First address.
    pub address: u16,
    /// Registers or bits.
    pub count: u16,
    /// Poll group: properties of different groups are never merged.
    pub group: String,
}

/// A property's place in a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// [`PlanInput::index`].
    pub index: usize,
    /// Offset of its first register (or bit) from the read's start.
    pub offset: u16,
    /// Registers or bits.
    pub count: u16,
}

/// One read request of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Unit id.
    pub unit: u8,
    /// Table.
    pub kind: RegisterKind,
    /// Poll group.
    pub group: String,
    /// First address.
    pub start: u16,
    /// Registers or bits.
    pub count: u16,
    /// The properties it carries.
    pub members: Vec<Member>,
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A property alone is longer than one read may be.
    #[error("property {index} spans {count} {what}, more than the {max} one read may carry")]
    TooLong {
        /// Its index.
        index: usize,
        /// Its length.
        count: u16,
        /// Registers or bits.
        what: &'static str,
        /// The limit.
        max: u16,
    },
}

fn max_len(kind: RegisterKind, limits: &ReadLimits) -> u16 {
    if kind.is_bits() {
        limits.max_bits
    } else {
        limits.max_registers
    }
}

type Key = (u8, RegisterKind, String);

fn grouped(inputs: &[PlanInput]) -> BTreeMap<Key, Vec<&PlanInput>> {
    let mut groups: BTreeMap<Key, Vec<&PlanInput>> = BTreeMap::new();
    for p in inputs {
        groups
            .entry((p.unit, p.kind, p.group.clone()))
            .or_default()
            .push(p);
    }
    for v in groups.values_mut() {
        v.sort_by_key(|p| (p.address, p.count, p.index));
    }
    groups
}

fn end(p: &PlanInput) -> u32 {
    u32::from(p.address) + u32::from(p.count)
}

fn build(key: &Key, run: &[&PlanInput]) -> Read {
    let start = run.iter().map(|p| p.address).min().unwrap_or(0);
    let stop = run.iter().map(|p| end(p)).max().unwrap_or(u32::from(start));
    Read {
        unit: key.0,
        kind: key.1,
        group: key.2.clone(),
        start,
        count: (stop - u32::from(start)) as u16,
        members: run
            .iter()
            .map(|p| Member {
                index: p.index,
                offset: p.address - start,
                count: p.count,
            })
            .collect(),
    }
}

/// Plans with hole filling up to `limits.max_gap`.
pub fn plan(inputs: &[PlanInput], limits: &ReadLimits) -> Result<Vec<Read>, PlanError> {
    plan_with_gap(inputs, limits, limits.max_gap)
}

/// Plans merging only properties that touch or overlap (no holes).
pub fn plan_contiguous(inputs: &[PlanInput], limits: &ReadLimits) -> Result<Vec<Read>, PlanError> {
    plan_with_gap(inputs, limits, 0)
}

/// One read per property (what KubeEdge's mappers do).
pub fn plan_per_property(inputs: &[PlanInput]) -> Vec<Read> {
    inputs
        .iter()
        .map(|p| build(&(p.unit, p.kind, p.group.clone()), &[p]))
        .collect()
}

fn plan_with_gap(
    inputs: &[PlanInput],
    limits: &ReadLimits,
    gap: u16,
) -> Result<Vec<Read>, PlanError> {
    let mut reads = Vec::new();
    for (key, props) in grouped(inputs) {
        let max = max_len(key.1, limits);
        let mut run: Vec<&PlanInput> = Vec::new();
        let (mut run_start, mut run_end) = (0u32, 0u32);
        for p in props {
            if p.count > max {
                return Err(PlanError::TooLong {
                    index: p.index,
                    count: p.count,
                    what: if key.1.is_bits() { "bits" } else { "registers" },
                    max,
                });
            }
            let fits = !run.is_empty()
                && u32::from(p.address) <= run_end + u32::from(gap)
                && end(p).max(run_end) - run_start <= u32::from(max);
            if fits {
                run_end = run_end.max(end(p));
                run.push(p);
            } else {
                if !run.is_empty() {
                    reads.push(build(&key, &run));
                }
                run = vec![p];
                run_start = u32::from(p.address);
                run_end = end(p);
            }
        }
        if !run.is_empty() {
            reads.push(build(&key, &run));
        }
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(index: usize, kind: RegisterKind, address: u16, count: u16) -> PlanInput {
        PlanInput {
            index,
            unit: 1,
            kind,
            address,
            count,
            group: "g".into(),
        }
    }

    const L: ReadLimits = ReadLimits {
        max_registers: 125,
        max_bits: 2000,
        max_gap: 10,
    };

    #[test]
    fn merges_holes_up_to_the_gap() {
        let h = RegisterKind::Holding;
        let ps = [
            input(0, h, 0, 2),
            input(1, h, 2, 2),
            input(2, h, 10, 1),
            input(3, h, 30, 4),
        ];
        let reads = plan(&ps, &L).unwrap();
        assert_eq!(reads.len(), 2);
        assert_eq!((reads[0].start, reads[0].count), (0, 11));
        assert_eq!((reads[1].start, reads[1].count), (30, 4));
        assert_eq!(plan_contiguous(&ps, &L).unwrap().len(), 3);
        assert_eq!(plan_per_property(&ps).len(), 4);
    }

    #[test]
    fn never_past_the_limits_and_overlaps_share() {
        let h = RegisterKind::Input;
        let ps: Vec<_> = (0..100).map(|i| input(i, h, (i * 2) as u16, 2)).collect();
        let reads = plan(&ps, &L).unwrap();
        assert!(reads.iter().all(|r| r.count <= 125));
        assert_eq!(reads.len(), 2); // 200 registers: 124 + 76
        let overlap = [input(0, h, 10, 4), input(1, h, 12, 1)];
        let reads = plan(&overlap, &L).unwrap();
        assert_eq!(reads.len(), 1);
        assert_eq!(
            reads[0].members[1],
            Member {
                index: 1,
                offset: 2,
                count: 1
            }
        );
        let low = ReadLimits {
            max_registers: 8,
            ..L
        };
        assert!(plan(&ps, &low).unwrap().iter().all(|r| r.count <= 8));
    }

    #[test]
    fn tables_units_and_groups_stay_apart() {
        let mut ps = vec![
            input(0, RegisterKind::Holding, 0, 1),
            input(1, RegisterKind::Input, 1, 1),
        ];
        ps.push(PlanInput {
            unit: 2,
            ..input(2, RegisterKind::Holding, 1, 1)
        });
        ps.push(PlanInput {
            group: "slow".into(),
            ..input(3, RegisterKind::Holding, 2, 1)
        });
        assert_eq!(plan(&ps, &L).unwrap().len(), 4);
        // Bits merge up to 2000.
        let bits: Vec<_> = (0..3000)
            .map(|i| input(i, RegisterKind::Coil, i as u16, 1))
            .collect();
        assert_eq!(plan(&bits, &L).unwrap().len(), 2);
    }

    #[test]
    fn a_property_longer_than_a_read_is_an_error() {
        let ps = [input(0, RegisterKind::Holding, 0, 126)];
        assert!(matches!(
            plan(&ps, &L),
            Err(PlanError::TooLong { max: 125, .. })
        ));
    }

    /// The least number of reads covering the sorted properties in runs (dynamic program).
    fn optimum(ps: &[PlanInput], limits: &ReadLimits) -> usize {
        let mut total = 0;
        for (key, group) in grouped(ps) {
            let max = u32::from(max_len(key.1, limits));
            let n = group.len();
            let mut best = vec![usize::MAX; n + 1];
            best[0] = 0;
            for i in 0..n {
                if best[i] == usize::MAX {
                    continue;
                }
                let (start, mut stop) = (u32::from(group[i].address), end(group[i]));
                for j in i..n {
                    if j > i {
                        if u32::from(group[j].address) > stop + u32::from(limits.max_gap) {
                            break;
                        }
                        stop = stop.max(end(group[j]));
                    }
                    if stop - start > max {
                        break;
                    }
                    best[j + 1] = best[j + 1].min(best[i] + 1);
                }
            }
            total += best[n];
        }
        total
    }

    fn arb_inputs() -> impl Strategy<Value = Vec<PlanInput>> {
        proptest::collection::vec((0u16..300, 1u16..5, 0usize..2, 0usize..2), 1..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (a, c, k, g))| PlanInput {
                    index: i,
                    unit: 1,
                    kind: [RegisterKind::Holding, RegisterKind::Coil][k],
                    address: a,
                    count: c,
                    group: ["a", "b"][g].into(),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn plans_cover_every_property_within_limits(ps in arb_inputs(), gap in 0u16..20, maxr in 4u16..126) {
            let limits = ReadLimits { max_registers: maxr, max_bits: maxr * 4, max_gap: gap };
            let reads = plan(&ps, &limits).unwrap();
            let mut seen = vec![0; ps.len()];
            for r in &reads {
                prop_assert!(r.count <= max_len(r.kind, &limits));
                for m in &r.members {
                    let p = &ps[m.index];
                    seen[m.index] += 1;
                    prop_assert_eq!((p.kind, p.unit, &p.group), (r.kind, r.unit, &r.group));
                    prop_assert_eq!(u32::from(r.start) + u32::from(m.offset), u32::from(p.address));
                    prop_assert!(m.offset + m.count <= r.count);
                }
            }
            prop_assert!(seen.iter().all(|n| *n == 1));
            prop_assert!(reads.len() <= plan_contiguous(&ps, &limits).unwrap().len());
            prop_assert!(reads.len() <= ps.len());
            prop_assert_eq!(reads.len(), optimum(&ps, &limits));
        }
    }
}
