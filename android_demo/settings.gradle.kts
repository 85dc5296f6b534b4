// edgeclip Android demo: the app (:app) over the plain-JVM core library (:core, also a Maven project).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    // Repositories are declared here only; a module's own repositories block is ignored.
    repositoriesMode.set(RepositoriesMode.PREFER_SETTINGS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "edgeclip-android-demo"
include(":app")
include(":core")
