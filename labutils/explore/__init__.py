"""Explorers: one interactive figure per lab, each answering a question that lab asks.

A notebook builds one in a single line, after the section whose results it shows:

=========================================  ============================================================================
``lab00_data(mnist)``                      the digits by class and index, pixel histograms, where the data came from
``lab01_decision_boundary()``              a 2-D MLP's decision boundary as hidden units, depth and activation change
``lab02_optimizers()``                     optimizer paths on 2-D loss surfaces (quadratic, Rosenbrock), loss curves
``lab03_convolution()``                    convolution arithmetic: output size and receptive field on the input
``lab03_feature_maps(model, x, y)``        the trained NumPy CNN's feature maps for a chosen digit and layer
``lab04_gradient_flow(runs)``              per-layer gradient norms during training, plain vs residual, by epoch
``lab05_gradient_flow(runs)``              the same for lab 05's CNNs
``lab06_augmentation()``                   augmentation on real digits, by transform and strength
``lab06_curves(runs)``                     the ablation's training curves, configurations overlaid as chosen
``lab07_transfer(pair_runs)``              strategy × labelled examples per class → accuracy, with the confusion matrix
``lab08_robustness(models, splits, ...)``  corruption × severity: the images, the model's predictions, the accuracy
``lab09_cam(model, x, y)``                 image, target class and CAM method → the heat map, with its ROAD score
=========================================  ============================================================================

Each is a plain function that computes the numbers shown (tested like every figure function here) and a thin
ipywidgets panel, :class:`~labutils.explore.core.Explorer`; see :mod:`labutils.explore.core` for how an explorer
still shows its figure where no live kernel is (papermill, nbval, the course website). ``demo_runs()`` builds small
runs for all of them at once (``notebooks/explorers.ipynb``).
"""

from labutils.explore.boundary import lab01_decision_boundary
from labutils.explore.cam import lab09_cam
from labutils.explore.convolution import lab03_convolution, lab03_feature_maps
from labutils.explore.core import Explorer, View
from labutils.explore.demo import demo_runs
from labutils.explore.digits import lab00_data
from labutils.explore.gradient_flow import lab04_gradient_flow, lab05_gradient_flow
from labutils.explore.optimizers import lab02_optimizers
from labutils.explore.regularization import lab06_augmentation, lab06_curves
from labutils.explore.robustness import lab08_robustness
from labutils.explore.transfer import lab07_transfer

__all__ = [
    "Explorer",
    "View",
    "demo_runs",
    "lab00_data",
    "lab01_decision_boundary",
    "lab02_optimizers",
    "lab03_convolution",
    "lab03_feature_maps",
    "lab04_gradient_flow",
    "lab05_gradient_flow",
    "lab06_augmentation",
    "lab06_curves",
    "lab07_transfer",
    "lab08_robustness",
    "lab09_cam",
]
