//! Where a run's rows come from: the part of the `[data]` section every task shares (the
//! training and validation files, the row limit, the held-out share and its seed, the column
//! names), and what is done with it (reading the files, holding out validation rows).

use std::path::Path;

use papertune_data::{
    ColumnMap, EmptyTextPolicy, LoadOptions, PaperRecord, load_papers, stratified_split,
};

use crate::error::TaskError;

/// Declares a task's `[data]` section: the fields every task shares, then the task's own, each
/// `name: type = default`. One declaration, so the sections cannot drift apart; and plain serde
/// fields (not `#[serde(flatten)]`, which loses the key in error messages), so that a wrong
/// value names its key (`data.max_rows`) and an unknown key lists the known ones. The section
/// gets [`DataSource`], its shared part, through `source()`.
macro_rules! data_section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Training file (CSV, TSV, Parquet, JSON lines, JSON).
            pub train: Option<std::path::PathBuf>,
            /// Validation file; when unset, a stratified `valid_fraction` of `train` is held out.
            pub valid: Option<std::path::PathBuf>,
            /// Use only the first N rows of each file.
            pub max_rows: Option<usize>,
            /// Share of `train` held out for validation when `valid` is unset.
            pub valid_fraction: f64,
            /// Seed of that split (`train.seed` when unset).
            pub split_seed: Option<u64>,
            /// Column names.
            pub columns: papertune_data::ColumnMap,
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    train: None,
                    valid: None,
                    max_rows: None,
                    valid_fraction: 0.1,
                    split_seed: None,
                    columns: papertune_data::ColumnMap::default(),
                    $( $field: $default, )*
                }
            }
        }

        impl $name {
            /// The shared part of the section: where the rows come from.
            pub fn source(&self) -> $crate::data::DataSource<'_> {
                $crate::data::DataSource {
                    train: self.train.as_deref(),
                    valid: self.valid.as_deref(),
                    max_rows: self.max_rows,
                    valid_fraction: self.valid_fraction,
                    split_seed: self.split_seed,
                    columns: &self.columns,
                }
            }
        }
    };
}

pub(crate) use data_section;

/// Where a run's rows come from, as every task's `[data]` section gives it.
#[derive(Debug, Clone, Copy)]
pub struct DataSource<'a> {
    pub train: Option<&'a Path>,
    pub valid: Option<&'a Path>,
    pub max_rows: Option<usize>,
    pub valid_fraction: f64,
    pub split_seed: Option<u64>,
    pub columns: &'a ColumnMap,
}

/// How rows are read: whether every row needs a label, and what to do with rows without text.
#[derive(Debug, Clone, Copy)]
pub struct RowRules {
    pub require_label: bool,
    pub empty_text: EmptyTextPolicy,
}

impl<'a> DataSource<'a> {
    /// Options for [`load_papers`] with these column names and `max_rows`.
    pub fn load_options(&self, max_rows: Option<usize>, rules: RowRules) -> LoadOptions<'a> {
        LoadOptions {
            columns: self.columns,
            max_rows,
            require_label: rules.require_label,
            empty_text: rules.empty_text,
        }
    }

    /// The training file, which must be set.
    pub fn train_path(&self) -> Result<&'a Path, TaskError> {
        self.train.ok_or_else(|| TaskError::Config("data.train is not set".into()))
    }

    /// The rows of `data.train` (the first `max_rows`).
    pub fn train_rows(&self, rules: RowRules) -> Result<Vec<PaperRecord>, TaskError> {
        Ok(load_papers(self.train_path()?, &self.load_options(self.max_rows, rules))?.0)
    }

    /// Training and validation rows from `rows` (read from `data.train`): the validation rows
    /// are those of `data.valid` (its first `max_valid` rows) when it is set; else a stratified
    /// `valid_fraction` of `rows`, drawn with `split_seed` (else `default_seed`), at most
    /// `max_valid` of them, and none when the fraction is 0.
    pub fn split(
        &self,
        rows: Vec<PaperRecord>,
        rules: RowRules,
        max_valid: Option<usize>,
        default_seed: u64,
    ) -> Result<(Vec<PaperRecord>, Vec<PaperRecord>), TaskError> {
        if let Some(valid) = self.valid {
            let (valid, _) = load_papers(valid, &self.load_options(max_valid, rules))?;
            return Ok((rows, valid));
        }
        if self.valid_fraction == 0.0 {
            return Ok((rows, Vec::new()));
        }
        let labels: Vec<u8> = rows.iter().map(|p| p.label.unwrap_or(0)).collect();
        let (train_idx, mut valid_idx) = stratified_split(
            &labels,
            self.valid_fraction,
            self.split_seed.unwrap_or(default_seed),
        )?;
        if let Some(max) = max_valid {
            valid_idx.truncate(max);
        }
        let pick = |idx: &[usize]| idx.iter().map(|&i| rows[i].clone()).collect::<Vec<_>>();
        Ok((pick(&train_idx), pick(&valid_idx)))
    }
}
