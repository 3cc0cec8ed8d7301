//! A matrix read in place through its strides, and its product into a strided buffer with
//! gemm: the flex kernels' products (transposed and sliced views without copies) and the
//! quantised matrices' decoded bands share it.

/// A 2-d f32 tensor read in place: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Matrix<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// The `rows x cols` matrix whose element `(i, j)` is `data[i * row_stride + j * col_stride]`.
    ///
    /// # Panics
    /// If the last element lies outside `data`.
    pub(crate) fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        assert!(
            rows > 0 && cols > 0 && (rows - 1) * row_stride + (cols - 1) * col_stride < data.len()
        );
        Matrix { data, rows, cols, row_stride, col_stride }
    }

    /// The transpose, as a view.
    pub(crate) fn transposed(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Columns `start..start + cols` of this matrix.
    #[cfg_attr(not(feature = "flex"), allow(dead_code))]
    pub(crate) fn columns(self, start: usize, cols: usize) -> Self {
        Matrix { data: &self.data[start * self.col_stride..], cols, ..self }
    }

    /// `dst (+)= factor * self rhs` into a row-major buffer with rows `dst_row_stride` apart.
    ///
    /// # Safety
    /// `dst` must be valid for writes (and, with `read_dst`, initialised reads) of elements
    /// `i * dst_row_stride + j` for `i < self.rows`, `j < rhs.cols`, and no other thread may
    /// touch them during the call. gemm reads the operands only through their strides,
    /// within what `Matrix::strided` (or flex's `Matrix::of`) checked; with `read_dst` false it stores without reading.
    pub(crate) unsafe fn product_into(
        self,
        rhs: Matrix<'_>,
        dst: *mut f32,
        dst_row_stride: usize,
        read_dst: bool,
        factor: f32,
        parallelism: gemm::Parallelism,
    ) {
        assert_eq!(self.cols, rhs.rows);
        // SAFETY: see the function's contract.
        unsafe {
            gemm::gemm(
                self.rows,
                rhs.cols,
                self.cols,
                dst,
                1,
                dst_row_stride as isize,
                read_dst,
                self.data.as_ptr(),
                self.col_stride as isize,
                self.row_stride as isize,
                rhs.data.as_ptr(),
                rhs.col_stride as isize,
                rhs.row_stride as isize,
                1.0,
                factor,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}
