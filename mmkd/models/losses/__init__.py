from .crosskd_loss import KDDistributionLoss, KDQualityFocalLoss, kd_quality_focal_loss
from .cwd_loss import CWDLoss, channel_wise_divergence
from .dist_loss import DISTLoss, pearson_correlation
from .fitnets_loss import FitNetsLoss
from .fsp_loss import FSPLoss, fsp_matrix
from .kd_loss import KDLoss, kl_divergence_with_temperature
from .dearkd_logit_loss import DearKDLogitLoss
from .non_finite import NonFiniteLossError
from .ofd_loss import OFDLoss, partial_l2
from .pkd_loss import PKDLoss, normalize_per_channel
from .tekap_loss import TeKAPFeatureLoss, TeKAPLoss, perturbed_views

__all__ = [
    'FitNetsLoss', 'FSPLoss', 'fsp_matrix', 'KDLoss', 'kl_divergence_with_temperature',
    'DearKDLogitLoss', 'OFDLoss', 'partial_l2', 'TeKAPFeatureLoss', 'TeKAPLoss',
    'perturbed_views', 'NonFiniteLossError', 'CWDLoss', 'channel_wise_divergence', 'PKDLoss', 'normalize_per_channel', 'DISTLoss',
    'pearson_correlation', 'KDQualityFocalLoss', 'KDDistributionLoss', 'kd_quality_focal_loss'
]
