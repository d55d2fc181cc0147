from .digits import DigitsDataset
from .transforms import RandomAffine

__all__ = ['DigitsDataset', 'RandomAffine']
