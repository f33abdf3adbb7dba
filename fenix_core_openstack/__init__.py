"""OpenStack cloud plug-in for fenix-core (on openstacksdk).

Not implemented yet: ``pip install fenix-core[openstack]`` will provide
``OpenStackCloud`` here (see the project's issue tracker).
"""
