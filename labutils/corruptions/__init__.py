"""Seeded image corruptions: the CIFAR-10-C / CIFAR-100-C set and the MNIST-C set, on batches of tensors;
mCE and the evaluation of models under corruption.

Hendrycks & Dietterich (2019) measure robustness on 15 corruptions in four families at five severities
(:data:`CORRUPTIONS`, plus four held-out :data:`EXTRAS`); Mu & Gilmer (2019) chose 15 corruptions that
keep a handwritten digit legible (:data:`MNIST_C`). Here every one of them is a function of a batch:

>>> x = to_float(splits.x_test[:256])                   # uint8 (N, C, H, W) -> float32 in [0, 1]
>>> y = corrupt(x, "fog", severity=3, seed=0)            # same shape, dtype and range

Images are float tensors in [0, 1], shape (N, C, H, W), C = 1 (greyscale) or 3 (RGB), *before*
normalisation: corrupt first, then standardise with the dataset's mean and std (as
:class:`labutils.data.ImageArrayDataset` does with the uint8 arrays :func:`to_uint8` gives back).

Parameters. Each severity 1..5 uses the published parameters of the benchmark the corruption comes from:
CIFAR-10-C's for the CIFAR set and the extras, MNIST-C's for the MNIST-C-only corruptions (shear, scale,
rotate, translate, stripe, dotted_line, zigzag, canny_edges). ``benchmark="mnist"`` selects MNIST-C's table
for the names both sets share (its noise and fog are much stronger); :func:`parameters` shows any entry.
MNIST-C itself released one severity per corruption: :data:`MNIST_C_SEVERITY` says which. Its four
severity-free corruptions get a five-step ladder here, with the published form at the level named there.

Randomness. ``seed`` fixes every random draw; the draws depend on the seed and the corruption's name,
not on the severity, so the five severities of one seed share their noise fields, angles and positions and
differ only by the parameters. Nothing touches the global NumPy or torch generators.

Approximations. Where the original needs ImageMagick (motion blur, snow), photographs (frost), OpenCV's
Canny and distance transform (CIFAR-C spatter's water drops) or skimage's full Canny detector, a procedural
version of the same name stands in: :data:`APPROXIMATIONS` (:func:`is_approximation` says which table),
and each says so in its docstring. Other corruptions follow the published algorithm with torch resampling
(bilinear), so pixel values can differ slightly from the published ``.npy`` files, which were also
truncated to uint8 between some steps. :func:`to_uint8` and :func:`corrupt_arrays` truncate as those
files do (``np.uint8`` of a float): 254.9 grey levels are stored as 254.

The package, by concern (the public names of each are importable from ``labutils.corruptions`` itself):

=================  ==========================================================================================
``core``           the names, families and parameter tables as one set; :func:`corrupt`, :func:`corrupt_arrays`,
                   :func:`corrupted_test_sets`
``cifar_c``        the CIFAR-10-C algorithms and parameters (also the seven MNIST-C shares with it)
``mnist_c``        MNIST-C's own eight corruptions and its parameters
``ops``            image operations the algorithms share (filters, resampling, fractal noise, conversions)
``scores``         corruption errors, mCE, relative mCE, mean corruption accuracy
``evaluation``     :func:`predict_uint8`, :func:`evaluate_under_corruption`, :func:`saved_models`
``plots``          :func:`corruption_grid`, :func:`plot_corruption_heatmaps`
``published``      the published CIFAR-10-C / CIFAR-100-C files: :func:`load_corruption_benchmark`, checked
=================  ==========================================================================================

Dependencies go one way: ``core`` imports nothing of ``labutils`` but ``util``; ``published`` adds
``labutils.datasets`` (where data lives); ``labutils.data`` imports nothing from this package.
"""

from labutils.corruptions.cifar_c import CORRUPTIONS, EXTRAS
from labutils.corruptions.core import (
    ALL_CORRUPTIONS,
    APPROXIMATIONS,
    BENCHMARKS,
    FAMILIES,
    SEVERITIES,
    CorruptedSet,
    benchmark_for,
    corrupt,
    corrupt_arrays,
    corrupted_test_sets,
    corruption_names,
    is_approximation,
    parameters,
)
from labutils.corruptions.evaluation import CorruptionResults, evaluate_under_corruption, predict_uint8, saved_models
from labutils.corruptions.mnist_c import MNIST_C, MNIST_C_SEVERITY
from labutils.corruptions.ops import to_float, to_uint8
from labutils.corruptions.plots import corruption_grid, plot_corruption_heatmaps
from labutils.corruptions.published import (
    BenchmarkFileError,
    corruption_benchmark_available,
    corruption_benchmark_dir,
    load_corruption_benchmark,
)
from labutils.corruptions.scores import (
    corruption_errors,
    mean_corruption_accuracy,
    mean_corruption_error,
    relative_mce,
)

__all__ = [
    "CORRUPTIONS",
    "EXTRAS",
    "MNIST_C",
    "ALL_CORRUPTIONS",
    "FAMILIES",
    "APPROXIMATIONS",
    "BENCHMARKS",
    "SEVERITIES",
    "MNIST_C_SEVERITY",
    "corrupt",
    "corrupt_arrays",
    "corrupted_test_sets",
    "CorruptedSet",
    "corruption_names",
    "benchmark_for",
    "is_approximation",
    "parameters",
    "to_float",
    "to_uint8",
    "corruption_errors",
    "mean_corruption_error",
    "relative_mce",
    "mean_corruption_accuracy",
    "corruption_grid",
    "CorruptionResults",
    "evaluate_under_corruption",
    "predict_uint8",
    "plot_corruption_heatmaps",
    "saved_models",
    "BenchmarkFileError",
    "corruption_benchmark_available",
    "corruption_benchmark_dir",
    "load_corruption_benchmark",
]
