from .base_connector import BaseConnector, TeacherTapContext
from .conv_bn_connector import ConvBNConnector
from .generic_connectors import (IdentityConnector, MapToTokensConnector, ResizeConnector,
                                 TokensToMapConnector, map_to_tokens, tokens_to_map)
from .aligner_connector import AlignerConnector
from .ofd_connector import OFDTeacherConnector, find_bn_of_tap, gaussian_margin
from .suggest import connectors_needed

__all__ = [
    'BaseConnector', 'TeacherTapContext', 'ConvBNConnector', 'IdentityConnector',
    'MapToTokensConnector', 'ResizeConnector', 'TokensToMapConnector', 'map_to_tokens',
    'tokens_to_map', 'AlignerConnector', 'OFDTeacherConnector', 'find_bn_of_tap',
    'gaussian_margin', 'connectors_needed'
]
