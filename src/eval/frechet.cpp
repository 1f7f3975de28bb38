#include "frechet.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

// LAPACK's symmetric eigensolver (OpenBLAS carries LAPACK). The trailing
// lengths are the hidden Fortran lengths of the two character arguments.
extern "C" void dsyev_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda,
                       double* w, double* work, const int* lwork, int* info, size_t, size_t);

namespace gannf::eval {

Gaussian fit_gaussian(const float* x, size_t n, int d) {
  if (n < 2 || d < 1)
    throw std::invalid_argument("fit_gaussian: need at least 2 samples of at least 1 feature");
  Gaussian g;
  g.dim = d;
  g.n = n;
  g.mean.assign(d, 0.0);
  for (size_t i = 0; i < n; i++)
    for (int j = 0; j < d; j++) g.mean[j] += x[i * d + j];
  for (auto& m : g.mean) m /= (double)n;
  // Centred in double first: E[xx^T] - mu mu^T would cancel digits away when
  // the mean is large against the spread.
  std::vector<double> c(n * (size_t)d);
  for (size_t i = 0; i < n; i++)
    for (int j = 0; j < d; j++) c[i * d + j] = (double)x[i * d + j] - g.mean[j];
  g.cov.assign((size_t)d * d, 0.0);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)n, 1.0 / (double)(n - 1), c.data(),
              d, 0.0, g.cov.data(), d);
  for (int i = 0; i < d; i++)
    for (int j = 0; j < i; j++) g.cov[(size_t)i * d + j] = g.cov[(size_t)j * d + i];
  return g;
}

std::vector<double> symmetric_eigen(const std::vector<double>& a, int n,
                                    std::vector<double>* vectors) {
  if (n < 1 || a.size() != (size_t)n * n)
    throw std::invalid_argument("symmetric_eigen: matrix is not " + std::to_string(n) + "x" +
                                std::to_string(n));
  // Symmetric, so row- and column-major are the same matrix.
  std::vector<double> m = a, w(n);
  const char jobz = vectors ? 'V' : 'N', uplo = 'U';
  int info = 0, lwork = -1;
  double query = 0;
  dsyev_(&jobz, &uplo, &n, m.data(), &n, w.data(), &query, &lwork, &info, 1, 1);
  lwork = std::max(1, (int)query);
  std::vector<double> work(lwork);
  dsyev_(&jobz, &uplo, &n, m.data(), &n, w.data(), work.data(), &lwork, &info, 1, 1);
  if (info != 0)
    throw std::runtime_error("LAPACK dsyev failed (info " + std::to_string(info) +
                             "): the matrix holds NaN or Inf, or the eigensolver did not converge");
  if (vectors) {
    // dsyev leaves eigenvector k in column k of a column-major matrix, that
    // is row k of what we hold: transpose to columns of a row-major one.
    vectors->assign((size_t)n * n, 0.0);
    for (int k = 0; k < n; k++)
      for (int i = 0; i < n; i++) (*vectors)[(size_t)i * n + k] = m[(size_t)k * n + i];
  }
  return w;
}

namespace {
// C = A B for n x n row-major matrices.
std::vector<double> matmul(const std::vector<double>& A, const std::vector<double>& B, int n) {
  std::vector<double> C((size_t)n * n);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, A.data(), n, B.data(), n,
              0.0, C.data(), n);
  return C;
}
}  // namespace

Frechet frechet_distance(const Gaussian& a, const Gaussian& b) {
  const int d = a.dim;
  if (b.dim != d)
    throw std::invalid_argument("Fréchet distance of " + std::to_string(a.dim) + "- and " +
                                std::to_string(b.dim) + "-dimensional features");
  Frechet f;
  for (int i = 0; i < d; i++) f.mean_term += (a.mean[i] - b.mean[i]) * (a.mean[i] - b.mean[i]);
  // S1^1/2 = V diag(sqrt(l)) V^T; rounding can leave eigenvalues of a
  // semi-definite matrix slightly below zero, which are zeros.
  std::vector<double> V;
  const auto l = symmetric_eigen(a.cov, d, &V);
  std::vector<double> VS = V;  // V diag(sqrt(l))
  for (int i = 0; i < d; i++)
    for (int k = 0; k < d; k++) VS[(size_t)i * d + k] *= std::sqrt(std::max(l[k], 0.0));
  std::vector<double> R((size_t)d * d);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d, d, d, 1.0, VS.data(), d, V.data(), d,
              0.0, R.data(), d);
  std::vector<double> M = matmul(matmul(R, b.cov, d), R, d);
  // Symmetric in exact arithmetic; make it so in floating point for dsyev.
  for (int i = 0; i < d; i++)
    for (int j = 0; j < i; j++) {
      const double s = 0.5 * (M[(size_t)i * d + j] + M[(size_t)j * d + i]);
      M[(size_t)i * d + j] = M[(size_t)j * d + i] = s;
    }
  double tr_sqrt = 0;
  for (double m : symmetric_eigen(M, d)) tr_sqrt += std::sqrt(std::max(m, 0.0));
  double tr_a = 0, tr_b = 0;
  for (int i = 0; i < d; i++) tr_a += a.cov[(size_t)i * d + i], tr_b += b.cov[(size_t)i * d + i];
  f.trace_term = tr_a + tr_b - 2 * tr_sqrt;
  f.distance = f.mean_term + f.trace_term;
  return f;
}

}  // namespace gannf::eval
