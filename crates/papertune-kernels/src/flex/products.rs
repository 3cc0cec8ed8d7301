//! Matrix products through gemm on the operands' own strides (transposed and sliced views
//! without copies): linear layers, with the bias as the product's starting rows and
//! decoding-step products split over the threads, and batched products.

use burn::backend::{DType, TensorMetadata};
use burn::tensor::Bytes;
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::{CHUNK, contiguous_f32, written_in_chunks};
use crate::matrix::Matrix;
use crate::send_ptr::SendPtr;
use crate::simd::Width;

/// `x weight` for `x [rows, d_in]`, `weight [d_in, d_out]` on their own strides.
pub(super) fn linear_layer(x: &FlexTensor, weight: &FlexTensor) -> Option<FlexTensor> {
    match (Matrix::of(x), Matrix::of(weight)) {
        (Some(x), Some(w)) if x.cols == w.rows => Some(x.times(w, None)),
        _ => None,
    }
}

/// `x weight + bias`, the bias rows the product's starting values.
pub(super) fn linear_layer_bias(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
) -> Option<FlexTensor> {
    let bias = contiguous_f32(bias)?;
    match (Matrix::of(x), Matrix::of(weight)) {
        (Some(x), Some(w)) if x.cols == w.rows && bias.shape().num_elements() == w.cols => {
            Some(x.times(w, Some(bias.storage())))
        }
        _ => None,
    }
}

/// `a b` for `a [b0, b1, m, k]`, `b [b0, b1, k, n]`, each product on the operands' strides.
pub(super) fn batched_matmul(a: &FlexTensor, b: &FlexTensor) -> Option<FlexTensor> {
    match (Matrices::of(a), Matrices::of(b)) {
        (Some(x), Some(y)) if x.batch == y.batch && x.matrix.cols == y.matrix.rows => {
            Some(x.times(&y))
        }
        _ => None,
    }
}

/// Products at least this large (`m * n * k`) run on every core; smaller ones on one.
const PARALLEL_PRODUCT: usize = 192 * 192 * 192;

/// Products of at most this many rows (decoding steps) split their columns across the
/// threads when they have at least `PARALLEL_FEW_ROWS` multiply-adds.
const FEW_ROWS: usize = 8;

const PARALLEL_FEW_ROWS: usize = 1 << 17;

impl<'a> Matrix<'a> {
    /// The f32 matrix `t` is, through its own strides (a transposed or sliced view is read
    /// without a copy); `None` for other dtypes, ranks, empty or negative-stride layouts.
    fn of(t: &'a FlexTensor) -> Option<Self> {
        let layout = t.layout();
        let &[rows, cols] = layout.shape().as_slice() else { return None };
        let &[row_stride, col_stride] = layout.strides() else { return None };
        if t.dtype() != DType::F32 || rows == 0 || cols == 0 || row_stride < 0 || col_stride < 0 {
            return None;
        }
        let (row_stride, col_stride) = (row_stride as usize, col_stride as usize);
        let data: &[f32] = t.storage();
        let data = data.get(layout.start_offset()..)?;
        let last = (rows - 1) * row_stride + (cols - 1) * col_stride;
        (last < data.len()).then_some(Matrix { data, rows, cols, row_stride, col_stride })
    }

    /// `self rhs`, `[self.rows, rhs.cols]` and contiguous, with `row_init` (of `rhs.cols`
    /// values) added to every row: gemm accumulates onto the copied rows, so a bias costs
    /// no separate pass. Without it gemm writes every element of a fresh buffer.
    pub(super) fn times(self, rhs: Matrix<'_>, row_init: Option<&[f32]>) -> FlexTensor {
        let (m, n, k) = (self.rows, rhs.cols, self.cols);
        assert_eq!(k, rhs.rows);
        let mut out: Vec<f32> = match row_init {
            // Whole rows per task, each a copy of `row`.
            Some(row) => written_in_chunks(
                m * n,
                (CHUNK / n).max(1) * n,
                Width::Avx2,
                #[inline(always)]
                |_, o| {
                    for o in o.chunks_exact_mut(n) {
                        o.iter_mut().zip(row).for_each(|(o, &b)| {
                            o.write(b);
                        });
                    }
                },
            ),
            None => Vec::with_capacity(m * n),
        };
        let dst = SendPtr(out.as_mut_ptr());
        // Columns j0..j0 + cols of the output. SAFETY (for every call below): it writes
        // elements i * n + j0 + j < m * n of `out`'s capacity (j < cols <= n - j0); calls on
        // disjoint column ranges write disjoint elements, and with a bias the rows were
        // initialised above. Without one gemm stores without reading, so once every column
        // range has run, all m * n elements are initialised.
        let columns = |j0: usize, cols: usize, parallelism: gemm::Parallelism| unsafe {
            self.product_into(
                rhs.columns(j0, cols),
                dst.get().add(j0),
                n,
                row_init.is_some(),
                1.0,
                parallelism,
            );
        };
        let threads = rayon::current_num_threads();
        let work = m * n * k;
        if m <= FEW_ROWS && work >= PARALLEL_FEW_ROWS && threads > 1 && n >= 2 * 16 {
            // A matrix-vector product (one decoding step): gemm runs it on one thread,
            // bound by reading the weight, so the columns are split across the threads,
            // two blocks per thread (narrower blocks also keep gemv's accumulators in
            // registers: 30-40 ms instead of 39-45 ms for the decoder's weights, timed alone).
            let width = n.div_ceil(2 * threads).next_multiple_of(16);
            (0..n.div_ceil(width)).into_par_iter().for_each(|t| {
                let j0 = t * width;
                columns(j0, width.min(n - j0), gemm::Parallelism::None);
            });
        } else {
            let parallelism = if work >= PARALLEL_PRODUCT {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            };
            columns(0, n, parallelism);
        }
        // SAFETY: see above; every element is written.
        unsafe { out.set_len(m * n) };
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(burn::tensor::Shape::new([m, n])),
            DType::F32,
        )
    }
}

/// A rank-4 f32 tensor `[b0, b1, rows, cols]` read in place as `b0 * b1` matrices, through
/// its own strides (transposed and sliced views without a copy).
struct Matrices<'a> {
    batch: [usize; 2],
    batch_strides: [usize; 2],
    /// The first matrix; the others start `i0 * batch_strides[0] + i1 * batch_strides[1]`
    /// further into `matrix.data`.
    matrix: Matrix<'a>,
}

impl<'a> Matrices<'a> {
    fn of(t: &'a FlexTensor) -> Option<Self> {
        let layout = t.layout();
        let &[b0, b1, rows, cols] = layout.shape().as_slice() else { return None };
        let strides = layout.strides();
        if t.dtype() != DType::F32
            || strides.iter().any(|&s| s < 0)
            || [b0, b1, rows, cols].contains(&0)
        {
            return None;
        }
        let [s0, s1, row_stride, col_stride] =
            [strides[0], strides[1], strides[2], strides[3]].map(|s| s as usize);
        let data: &[f32] = t.storage();
        let data = data.get(layout.start_offset()..)?;
        let last =
            (b0 - 1) * s0 + (b1 - 1) * s1 + (rows - 1) * row_stride + (cols - 1) * col_stride;
        (last < data.len()).then_some(Matrices {
            batch: [b0, b1],
            batch_strides: [s0, s1],
            matrix: Matrix { data, rows, cols, row_stride, col_stride },
        })
    }

    /// Matrix `i` of the `b0 * b1`, in row-major order of the batch axes.
    fn get(&self, i: usize) -> Matrix<'a> {
        let offset =
            i / self.batch[1] * self.batch_strides[0] + i % self.batch[1] * self.batch_strides[1];
        Matrix { data: &self.matrix.data[offset..], ..self.matrix }
    }

    /// `self[i] rhs[i]` for every `i`, `[b0, b1, rows, rhs.cols]` and contiguous; the
    /// products in parallel, one thread each.
    fn times(&self, rhs: &Matrices<'_>) -> FlexTensor {
        let count = self.batch[0] * self.batch[1];
        let (m, n) = (self.matrix.rows, rhs.matrix.cols);
        let mut out: Vec<f32> = Vec::with_capacity(count * m * n);
        let dst = SendPtr(out.as_mut_ptr());
        (0..count).into_par_iter().for_each(|i| {
            // SAFETY: `Matrices::of` checked the last index of the last matrix; product i
            // writes elements i * m * n .. (i + 1) * m * n of `out`'s capacity, each once,
            // disjoint from the others.
            unsafe {
                self.get(i).product_into(
                    rhs.get(i),
                    dst.get().add(i * m * n),
                    n,
                    false,
                    1.0,
                    gemm::Parallelism::None,
                )
            };
        });
        // SAFETY: every element was written above.
        unsafe { out.set_len(count * m * n) };
        let [b0, b1] = self.batch;
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(burn::tensor::Shape::new([b0, b1, m, n])),
            DType::F32,
        )
    }
}
