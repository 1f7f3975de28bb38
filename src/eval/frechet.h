// The Fréchet distance between two Gaussians fitted to feature vectors:
//   FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
// in double throughout. The matrix square roots come from symmetric
// eigendecompositions (LAPACK's dsyev, in OpenBLAS): S1^1/2 S2 S1^1/2 is
// symmetric positive semi-definite, so its square root's trace is the sum of
// the square roots of its eigenvalues -- no general (non-symmetric) sqrtm,
// whose rounding can leave complex parts or a NaN.
#pragma once
#include <cstddef>
#include <vector>

namespace gannf::eval {

struct Gaussian {
  int dim = 0;
  size_t n = 0;              // samples it was fitted to
  std::vector<double> mean;  // (dim)
  std::vector<double> cov;   // (dim, dim), row-major, unbiased (n - 1)
};

// Mean and covariance of n rows of d features (float, row-major). n >= 2.
Gaussian fit_gaussian(const float* x, size_t n, int d);

struct Frechet {
  double distance = 0;    // mean_term + trace_term
  double mean_term = 0;   // |mu1 - mu2|^2
  double trace_term = 0;  // tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
};
// Throws std::invalid_argument when the dimensions differ, std::runtime_error
// when LAPACK fails.
Frechet frechet_distance(const Gaussian& a, const Gaussian& b);

// Eigenvalues (ascending) of the symmetric n x n matrix a (row-major; only
// its values matter, both triangles must agree); with vectors, the
// eigenvectors too, as the columns of *vectors (row-major n x n).
std::vector<double> symmetric_eigen(const std::vector<double>& a, int n,
                                    std::vector<double>* vectors = nullptr);

}  // namespace gannf::eval
