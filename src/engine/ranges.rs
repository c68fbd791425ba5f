//! One large Parquet file shared between scan partitions by rows, not bytes.
//!
//! Why (issue 19): DataFusion scans a large file in parallel by cutting it
//! into equal byte ranges, and a partition reads the row groups that *start*
//! in its range. With a few large row groups that is lopsided: the 10 M-row
//! benchmark file has eleven row groups of about 20 MB; the first half
//! (102 MB) ends just past the sixth group's start, so one partition read
//! 6.0 M rows and the other 4.1 M, and for 0.45 s of a 1.8 s check one of
//! the two cores had nothing to do.
//!
//! Here the ranges of such a file are cut again at row-group starts so that
//! the partitions read about the same number of rows (rows, not bytes: every
//! row group of a file has the same columns, and the profiles' work is per
//! value). The cut depends only on the footer and the partition count, so a
//! file is always split the same way — profiles depend on how rows are split
//! (same input, same answer).
//!
//! Only the plain case is touched: one file split into ranges, one range per
//! partition, at least as many row groups as partitions. Anything else, or a
//! footer that cannot be read here (the scan then reports it), keeps
//! DataFusion's ranges.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::{FileRange, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::context::SessionContext;
use datafusion::physical_plan::ExecutionPlan;

/// `plan` with the ranges of a file split between partitions re-cut by rows
/// (see the module doc); `plan` itself when there is nothing to re-cut.
pub(super) async fn balance(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &SessionContext,
) -> Arc<dyn ExecutionPlan> {
    let Some((config, file)) = split_file(&plan) else {
        return plan;
    };
    let Ok(store) = ctx.runtime_env().object_store(&config.object_store_url) else {
        return plan;
    };
    let Ok(footer) = DFParquetMetadata::new(store.as_ref(), &file.object_meta)
        .fetch_metadata()
        .await
    else {
        return plan;
    };
    let groups: Vec<(i64, u64)> = footer
        .row_groups()
        .iter()
        .map(|g| {
            let first = g.columns().first().map_or(0, |c| {
                c.dictionary_page_offset()
                    .unwrap_or_else(|| c.data_page_offset())
            });
            (first, u64::try_from(g.num_rows()).unwrap_or(0))
        })
        .collect();
    let size = i64::try_from(file.object_meta.size).unwrap_or(i64::MAX);
    let Some(ranges) = cut(&groups, config.file_groups.len(), size) else {
        return plan;
    };
    let file_groups: Vec<FileGroup> = ranges
        .into_iter()
        .map(|(start, end)| {
            let mut part = file.clone();
            part.range = Some(FileRange { start, end });
            FileGroup::new(vec![part])
        })
        .collect();
    let rebuilt = plan.clone().transform_up(|node| {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>()
            && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
        {
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(file_groups.clone())
                .build();
            let leaf: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
            return Ok(Transformed::yes(leaf));
        }
        Ok(Transformed::no(node))
    });
    rebuilt.map(|t| t.data).unwrap_or(plan)
}

/// The plan's one scan, when it reads one file split into one range per
/// partition.
fn split_file(plan: &Arc<dyn ExecutionPlan>) -> Option<(FileScanConfig, PartitionedFile)> {
    let mut scans = Vec::new();
    plan.apply(|node| {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>() {
            scans.push(exec.data_source().downcast_ref::<FileScanConfig>().cloned());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    let [Some(config)] = <[Option<FileScanConfig>; 1]>::try_from(scans).ok()? else {
        return None;
    };
    if config.file_groups.len() < 2 {
        return None;
    }
    let mut files = config.file_groups.iter().map(|g| match g.files() {
        [one] if one.range.is_some() => Some(one),
        _ => None,
    });
    let first = files.next()??.clone();
    for other in files {
        if other?.object_meta.location != first.object_meta.location {
            return None;
        }
    }
    Some((config, first))
}

/// `parts` byte ranges of a file of `size` bytes whose row groups are
/// `(first page offset, rows)` in file order: each range starts at a row
/// group's first page (the first at 0, the last ends at `size`) and the
/// ranges' rows are as even as contiguous runs of groups allow — range `k`
/// ends at the group boundary nearest to `k + 1` parts of the rows. None
/// when there are fewer row groups than parts or the offsets are not
/// increasing (then DataFusion's ranges stay).
pub(super) fn cut(groups: &[(i64, u64)], parts: usize, size: i64) -> Option<Vec<(i64, i64)>> {
    if parts < 2
        || groups.len() < parts
        || !groups.windows(2).all(|w| w[0].0 < w[1].0)
        || groups.last().is_some_and(|g| g.0 >= size)
    {
        return None;
    }
    let total: u64 = groups.iter().map(|g| g.1).sum();
    // Rows before each group: ends[i] = rows of groups 0..i.
    let mut before = Vec::with_capacity(groups.len() + 1);
    let mut sum = 0u64;
    before.push(0u64);
    for g in groups {
        sum += g.1;
        before.push(sum);
    }
    let mut starts = vec![0usize];
    for k in 1..parts {
        let target = (total as u128 * k as u128 / parts as u128) as u64;
        // The boundary nearest the target, leaving at least one group for
        // each range before and after it.
        let lowest = starts.last().copied().unwrap_or(0) + 1;
        let highest = groups.len() - (parts - k);
        let best = (lowest..=highest).min_by_key(|&i| before[i].abs_diff(target))?;
        starts.push(best);
    }
    let mut ranges = Vec::with_capacity(parts);
    for (k, &start) in starts.iter().enumerate() {
        let from = if k == 0 { 0 } else { groups[start].0 };
        let to = match starts.get(k + 1) {
            Some(&next) => groups[next].0,
            None => size,
        };
        ranges.push((from, to));
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn issue_19_the_benchmark_files_row_groups_split_five_and_six() {
        // Ten groups of 1,001,472 rows and one of 76,400, about 20.2 MB each:
        // DataFusion's byte halves gave 6 groups and 4.
        let groups: Vec<(i64, u64)> = (0..11)
            .map(|i| (4 + i * 20_190_000, if i < 10 { 1_001_472 } else { 76_400 }))
            .collect();
        let size = 203_922_382;
        let ranges = cut(&groups, 2, size).unwrap();
        assert_eq!(
            ranges,
            vec![(0, 4 + 5 * 20_190_000), (4 + 5 * 20_190_000, size)]
        );
    }

    #[test]
    fn too_few_groups_or_disordered_offsets_keep_datafusions_ranges() {
        assert_eq!(cut(&[(4, 10)], 2, 100), None);
        assert_eq!(cut(&[(4, 10), (50, 10)], 3, 100), None);
        assert_eq!(cut(&[(50, 10), (4, 10)], 2, 100), None);
        assert_eq!(cut(&[(4, 10), (50, 10)], 1, 100), None);
        assert_eq!(
            cut(&[(4, 10), (50, 10)], 2, 100),
            Some(vec![(0, 50), (50, 100)])
        );
    }

    proptest! {
        /// Every row group starts in exactly one range, the ranges tile the
        /// file, and no range has more rows than an even share plus the
        /// largest group.
        #[test]
        fn ranges_tile_the_file_and_share_rows_evenly(
            rows in proptest::collection::vec(1u64..1_000_000, 1..40),
            parts in 2usize..6,
        ) {
            let mut offset = 4i64;
            let groups: Vec<(i64, u64)> = rows
                .iter()
                .map(|&r| {
                    let g = (offset, r);
                    offset += 1 + r as i64 / 10;
                    g
                })
                .collect();
            let size = offset + 1000;
            let Some(ranges) = cut(&groups, parts, size) else {
                prop_assert!(groups.len() < parts);
                return Ok(());
            };
            prop_assert_eq!(ranges.len(), parts);
            prop_assert_eq!(ranges[0].0, 0);
            prop_assert_eq!(ranges[parts - 1].1, size);
            for w in ranges.windows(2) {
                prop_assert_eq!(w[0].1, w[1].0);
            }
            let total: u64 = rows.iter().sum();
            let largest = rows.iter().copied().max().unwrap_or(0);
            for &(from, to) in &ranges {
                let inside: Vec<&(i64, u64)> =
                    groups.iter().filter(|g| g.0 >= from && g.0 < to).collect();
                prop_assert!(!inside.is_empty());
                let share: u64 = inside.iter().map(|g| g.1).sum();
                prop_assert!(share <= total / parts as u64 + largest, "{share} of {total}");
            }
        }
    }
}
