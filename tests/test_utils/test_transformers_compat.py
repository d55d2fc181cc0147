"""mmkd imports next to transformers 5, which breaks mmpretrain 1.2.0's multimodal models
(mmkd/utils/compat.py).

A stand-in ``transformers`` package (its version in the package metadata, where mmpretrain
reads it) goes on PYTHONPATH of a fresh interpreter. It has none of transformers' names, so
mmpretrain's multimodal modules fail on it as they fail on the real transformers 5 (there with
``TypeError: NoneType takes no arguments``); checked with the real transformers 5.17.0 too.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from mmkd.utils.compat import major_version


def fake_transformers(root, version: str) -> str:
    """A ``transformers`` package of ``version`` (module and dist-info) under ``root``."""
    package = root / 'transformers'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text(f'__version__ = {version!r}\n')
    info = root / f'transformers-{version}.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text(
        f'Metadata-Version: 2.1\nName: transformers\nVersion: {version}\n')
    return str(root)


def run_python(code: str, path: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [path, *filter(None, [os.environ.get('PYTHONPATH')])]))
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_mmpretrain_models_import_after_mmkd_next_to_transformers_5(tmp_path):
    path = fake_transformers(tmp_path / 'v5', '5.17.0')
    # Without mmkd the stand-in breaks mmpretrain as transformers 5 does.
    plain = run_python('from mmpretrain.models import ResNet', path)
    assert plain.returncode != 0 and 'mmpretrain/models' in plain.stderr
    result = run_python('''
        import mmkd
        import mmpretrain.utils.dependency as dependency
        from mmpretrain.models import ResNet
        from mmpretrain.registry import MODELS
        assert not dependency.WITH_MULTIMODAL
        assert ResNet(depth=18).layer4[0].conv1.out_channels == 512
        try:
            MODELS.build(dict(type='BlipCaption'))
        except ImportError as error:
            print(error)
        ''', path)
    assert result.returncode == 0, result.stderr
    assert 'transformers 5.17.0' in result.stdout
    assert 'pip install "transformers<5"' in result.stdout

    # With transformers 4 mmpretrain's own decision (pycocotools and transformers>=4.28
    # installed: multimodal on) is left alone; those models then need the real transformers 4.
    path = fake_transformers(tmp_path / 'v4', '4.40.0')
    result = run_python('''
        import mmkd
        import mmpretrain.utils.dependency as dependency
        print(dependency.WITH_MULTIMODAL, dependency.register_multimodal_placeholder.__module__)
        ''', path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['True', 'mmpretrain.utils.dependency']


@pytest.mark.parametrize('version, major', [('5.17.0', 5), ('5.0.0rc1', 5), ('4.57.1', 4),
                                            ('10.1', 10), ('dev', 0)])
def test_major_version(version, major):
    assert major_version(version) == major
