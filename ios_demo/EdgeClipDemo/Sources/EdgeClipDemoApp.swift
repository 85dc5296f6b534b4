import SwiftUI

@main
struct EdgeClipDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
